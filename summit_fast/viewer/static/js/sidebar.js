/* The class sidebar: every class as a row, a search box, and a sort menu (similarity to the selected
 * class in the current layer, accuracy, instance count, index). Clicking a row selects the class. */
(function (SF) {
  "use strict";

  SF.createSidebar = function ({ data, store, similarity }) {
    const classes = data.classes;
    const search = document.getElementById("class-search");
    const sortMenu = document.getElementById("class-sort");
    const countLabel = document.getElementById("class-count");
    const list = document.getElementById("class-list");
    const formatInt = d3.format(",");
    const numberOr = (value) => (Number.isFinite(value) ? value : null);

    /* value(c) is null where unknown; such classes sort last and show a dash. Similarity depends on
     * the selection and the layer, so its value function is made at sort time. */
    const sorts = {
      similarity: { value: null, format: (v) => v.toFixed(2), bar: true },
      accuracy: { value: (c) => numberOr(classes[c].topOneAcc), format: (v) => `${(100 * v).toFixed(1)}%`, bar: true },
      instances: { value: (c) => numberOr(classes[c].numOfInstances), format: formatInt, bar: true },
      index: { value: (c) => classes[c].target_class, format: (v) => `#${v}`, bar: false, ascending: true },
    };
    for (const option of sortMenu.options) {
      const sort = sorts[option.value];
      if (sort.value && !classes.some((cls, c) => sort.value(c) !== null)) {
        option.disabled = true;
        option.textContent += " (not in this data)";
      }
    }

    const rows = d3.select(list).selectAll("li")
      .data(d3.range(classes.length))
      .join("li")
      .attr("data-class", (c) => c);
    const buttons = rows.append("button")
      .attr("type", "button")
      .attr("class", "class-row")
      .on("click", (event, c) => store.set({ selected: c }));
    buttons.append("span").attr("class", "bar");
    buttons.append("span").attr("class", "name").text((c) => classes[c].name);
    buttons.append("span").attr("class", "value");

    function matcher(query) {
      const text = query.trim().toLowerCase();
      if (!text) return () => true;
      const asIndex = /^#?\d+$/.test(text) ? Number(text.replace("#", "")) : null;
      return (c) => classes[c].target_class === asIndex || classes[c].name.toLowerCase().includes(text);
    }

    function applySearch() {
      const matches = matcher(search.value);
      let shown = 0;
      rows.property("hidden", (c) => {
        const hit = matches(c);
        shown += hit;
        return !hit;
      });
      countLabel.textContent = shown === classes.length ? formatInt(shown) : `${formatInt(shown)} of ${formatInt(classes.length)}`;
    }

    function similarityToSelected() {
      const scores = similarity.scores(store.get("layer"), store.get("selected"));
      return (c) => scores[c];
    }

    function applySort() {
      const sort = sorts[sortMenu.value];
      const value = sort.value || similarityToSelected();
      const max = d3.max(classes, (cls, c) => value(c)) || 1;
      rows.sort((a, b) => {
        const va = value(a), vb = value(b);
        if (va === vb) return a - b;
        if (va === null || vb === null) return va === null ? 1 : -1;
        return sort.ascending ? va - vb : vb - va;
      });
      rows.select(".value").text((c) => (value(c) === null ? "–" : sort.format(value(c))));
      rows.select(".bar").style("width", (c) => (sort.bar && value(c) !== null ? `${(100 * value(c)) / max}%` : "0"));
    }

    function showSelected() {
      const selected = store.get("selected");
      rows.select("button").classed("selected", (c) => c === selected).attr("aria-pressed", (c) => c === selected);
      const row = rows.filter((c) => c === selected).node();
      if (row) row.scrollIntoView({ block: "nearest" });
    }

    search.addEventListener("input", applySearch);
    search.addEventListener("keydown", (event) => {  // Enter selects the first match shown
      const first = event.key === "Enter" && list.querySelector("li:not([hidden])");
      if (first) store.set({ selected: Number(first.dataset.class) });
    });
    sortMenu.addEventListener("change", applySort);
    store.on("selected", () => {
      if (sortMenu.value === "similarity") applySort();
      showSelected();
    });
    store.on("layer", () => {
      if (sortMenu.value === "similarity") applySort();
    });
    applySort();
    applySearch();
    showSelected();
  };
})(window.SF = window.SF || {});

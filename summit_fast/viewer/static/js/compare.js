/* Comparing two classes (Summit's future work): the graph of a second class merged into the
 * selected one's. A channel or connection is in both graphs, only in the first (the selected
 * class) or only in the second; the graph view colours them by that, with a legend. The second
 * class is chosen in the "Compare with" menu and kept in the address (url-state.js). */
(function (SF) {
  "use strict";

  const MEMBERSHIP = ["both", "first", "second"];

  /* One ag-{c}.json-like graph of the channels and connections of either graph: each node has
   * `in` (both, first or second) and `counts` ([count in first, in second], null where absent);
   * its count is the first graph's where it has it. Each prev_channels entry has `in` too, and
   * its `inf` is the first graph's where it has it. */
  function merge(first, second) {
    const merged = {};
    for (const layer of new Set([...Object.keys(first), ...Object.keys(second)])) {
      const byChannel = new Map();
      const add = (raw, which) => {
        const node = byChannel.get(raw.channel);
        if (!node) {
          byChannel.set(raw.channel, Object.assign({}, raw, {
            in: which, counts: which === "first" ? [raw.count, null] : [null, raw.count],
            prev_channels: (raw.prev_channels || []).map((link) => Object.assign({}, link, { in: which })),
          }));
          return;
        }
        node.in = "both";
        node.counts[1] = raw.count;
        const links = new Map(node.prev_channels.map((link) => [link.prev_channel, link]));
        for (const link of raw.prev_channels || []) {
          const known = links.get(link.prev_channel);
          if (known) known.in = "both";
          else node.prev_channels.push(Object.assign({}, link, { in: which }));
        }
      };
      for (const raw of first[layer] || []) add(raw, "first");
      for (const raw of second[layer] || []) add(raw, "second");
      merged[layer] = [...byChannel.values()];
    }
    return merged;
  }

  /* Classes the node and edge selections by membership (in-both, in-first, in-second) and shows
   * the legend with the two classes' names; `names` null: not comparing. */
  function mark(nodes, edges, names) {
    for (const which of MEMBERSHIP) {
      nodes.classed(`in-${which}`, (n) => Boolean(names) && n.in === which);
      edges.classed(`in-${which}`, (e) => Boolean(names) && e.in === which);
    }
    const legend = d3.select("#compare-legend");
    legend.attr("hidden", names ? null : "");
    if (!names) return;
    legend.selectAll("*").remove();
    for (const [which, text] of [["both", "in both classes"], ["first", `only ${names.first}`],
      ["second", `only ${names.second}`]]) {
      const item = legend.append("span").attr("class", `legend-item in-${which}`);
      item.append("span").attr("class", "swatch");
      item.append("span").text(text);
    }
  }

  /* The "Compare with" menu: none, or any other class. */
  function createControl({ data, store }) {
    const menu = document.getElementById("compare-select");
    const none = document.createElement("option");
    none.value = "";
    none.textContent = "none";
    menu.append(none);
    data.classes.forEach((cls, c) => {
      const option = document.createElement("option");
      option.value = String(c);
      option.textContent = `${cls.name} (#${cls.target_class})`;
      menu.append(option);
    });
    const show = () => {
      const compare = store.get("compare");
      menu.value = compare === null ? "" : String(compare);
      for (const option of menu.options) option.disabled = option.value === String(store.get("selected"));
    };
    menu.addEventListener("change", () => store.set({ compare: menu.value === "" ? null : Number(menu.value) }));
    store.on("compare", show);
    store.on("selected", show);
    show();
  }

  SF.compare = { merge, mark, createControl };
})(window.SF = window.SF || {});

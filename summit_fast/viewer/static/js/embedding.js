/* The embedding view: one point per class at its 2-D embedding in the current layer. Scroll zooms,
 * drag pans, hovering names a class, clicking selects it; switching the layer animates the points
 * to their new places. The svg's data-layer attribute names the layer once the points are there. */
(function (SF) {
  "use strict";

  const SIZE = 300;      // viewBox units; the svg scales to its panel
  const PADDING = 14;
  const RADIUS = 3;
  const SELECTED_RADIUS = 6;
  const DURATION = 750;
  const METHOD_NAMES = { umap: "UMAP", pca: "PCA" };

  SF.createEmbedding = function ({ data, store }) {
    const classes = data.classes;
    const note = document.getElementById("embedding-note");
    if (!classes.some((cls) => cls.embed && Object.keys(cls.embed).length)) {
      document.getElementById("embedding").classList.add("empty");
      note.textContent = "This data has no class embedding.";
      return;
    }
    const method = (data.index.embedding && data.index.embedding.method) || "";
    note.textContent = `${METHOD_NAMES[method] || method} of the classes' channel counts per layer. `
      + "Scroll to zoom, drag to pan, click to select.";

    const svg = d3.select("#embedding-canvas").append("svg")
      .attr("class", "embedding-svg")
      .attr("viewBox", `0 0 ${SIZE} ${SIZE}`);
    const plot = svg.append("g");
    const points = plot.append("g").attr("class", "points")
      .selectAll("circle")
      .data(d3.range(classes.length))
      .join("circle")
      .attr("class", "point")
      .attr("data-class", (c) => c)
      .on("mouseenter mousemove", (event, c) => SF.tooltip.show(classes[c].name, event))
      .on("mouseleave", () => SF.tooltip.hide())
      .on("click", (event, c) => store.set({ selected: c }));
    const label = plot.append("text").attr("class", "selected-label");
    let zoomScale = 1;

    svg.call(d3.zoom().scaleExtent([1, 40]).on("zoom", (event) => {
      zoomScale = event.transform.k;
      plot.attr("transform", event.transform);
      drawSizes();
    }));

    /* Point placement for a layer: one scale for both axes, so distances keep their meaning. */
    function placement(layer) {
      const xy = classes.map((cls) => (cls.embed && cls.embed[layer]) || null);
      const known = xy.filter(Boolean);
      const [x0, x1] = d3.extent(known, (p) => p.x);
      const [y0, y1] = d3.extent(known, (p) => p.y);
      const scale = (SIZE - 2 * PADDING) / (Math.max(x1 - x0, y1 - y0) || 1);
      const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
      return (c) => (xy[c] ? [SIZE / 2 + (xy[c].x - cx) * scale, SIZE / 2 - (xy[c].y - cy) * scale] : null);
    }

    function drawSizes() {
      const selected = store.get("selected");
      points.attr("r", (c) => (c === selected ? SELECTED_RADIUS : RADIUS) / zoomScale);
      label.attr("font-size", 11 / zoomScale).attr("dy", -9 / zoomScale);
    }

    let at = null; // placement(current layer)

    /* Above the selected point, anchored so that the name stays inside the view near its edges. */
    function placeLabel(selection) {
      const [x, y] = at(store.get("selected")) || [-SIZE, -SIZE]; // off view: class has no point here
      const anchor = x < SIZE / 4 ? "start" : x > (3 * SIZE) / 4 ? "end" : "middle";
      selection.attr("x", x).attr("y", y).attr("text-anchor", anchor);
    }

    function showLayer(animate) {
      const layer = store.get("layer");
      at = placement(layer);
      points.classed("missing", (c) => !at(c));
      const move = (selection) => (animate ? selection.transition().duration(DURATION).ease(d3.easeCubicInOut) : selection);
      svg.attr("data-layer", null);
      const moved = move(points)
        .attr("cx", (c) => (at(c) || [SIZE / 2])[0])
        .attr("cy", (c) => (at(c) || [0, SIZE / 2])[1]);
      move(label).call(placeLabel);
      const arrived = () => svg.attr("data-layer", layer);
      if (animate) moved.end().then(arrived, () => {}); // rejected when a newer switch interrupts
      else arrived();
    }

    function showSelected() {
      const selected = store.get("selected");
      points.classed("selected", (c) => c === selected);
      points.filter((c) => c === selected).raise();
      label.interrupt().text(classes[selected].name).call(placeLabel);
      drawSizes();
    }

    store.on("selected", showSelected);
    store.on("layer", () => showLayer(true));
    showLayer(false);
    showSelected();
  };
})(window.SF = window.SF || {});

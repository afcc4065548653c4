/* The attribution graph view: the selected class's graph in layers (last layer on top), node area by
 * count, edge width by influence, nodes drawn as their pictures where they exist (node-images.js).
 * Hovering a node lights it and its neighbours and fills the details panel; clicking pins it there
 * until it is clicked again or another is pinned. Sliders filter nodes by count and set the layout's
 * width and height (never so small that boxes or labels overlap: layout.js); scroll zooms, drag pans,
 * Fit zooms to the whole graph. Layer labels select the layer. A second class (compare.js) merges its
 * graph in, telling shared and single-class channels apart. */
(function (SF) {
  "use strict";

  const MARGIN = { top: 40, right: 40, bottom: 88, left: 90 };  // left: layer labels; bottom: the legend (two lines when comparing)
  const EDGE_WIDTH = [0.6, 7];
  const DURATION = 300;

  SF.createGraphView = function ({ data, store, details }) {
    const canvas = document.getElementById("graph-canvas");
    const title = document.getElementById("graph-title");
    const stats = document.getElementById("graph-stats");
    const widthInput = document.getElementById("graph-width");
    const heightInput = document.getElementById("graph-height");
    const countInput = document.getElementById("count-filter");
    const countOutput = document.getElementById("count-filter-value");
    const emptyNote = document.getElementById("graph-empty");

    const svg = d3.select("#graph-svg");
    SF.nodeImages.define(svg.append("defs"));
    const viewport = svg.append("g").attr("class", "viewport");
    const bands = viewport.append("g").attr("class", "layer-bands");
    const edgeGroup = viewport.append("g").attr("class", "edges");
    const nodeGroup = viewport.append("g").attr("class", "nodes");
    const zoom = d3.zoom().scaleExtent([0.1, 8]).on("zoom", (event) => viewport.attr("transform", event.transform));
    svg.call(zoom).on("dblclick.zoom", null);

    let model = null;
    let pinned = null;  // the node whose details stay while others are hovered
    let nodes = d3.select(null), edges = d3.select(null), layerBands = d3.select(null);
    const link = d3.linkVertical().x((p) => p.x).y((p) => p.y);

    function render({ c, ag, compare }) {
      model = SF.graphModel.build(compare ? SF.compare.merge(ag, compare.ag) : ag, data.index.layers);
      pinned = null;
      const radius = setDefaultSize();
      countInput.max = d3.max(model.nodes, (n) => n.count) || 0;
      countInput.value = 0;
      drawBands();
      drawEdges(d3.scaleLinear().domain([0, d3.max(model.edges, (e) => e.inf) || 1]).range(EDGE_WIDTH));
      drawNodes(radius);
      SF.compare.mark(nodes, edges, compare && { first: data.classes[c].name, second: data.classes[compare.c].name });
      title.textContent = compare ? `${data.classes[c].name} vs ${data.classes[compare.c].name}` : data.classes[c].name;
      emptyNote.hidden = model.nodes.length > 0;
      place(false);
      fit();
      applyFilter();
      showCurrentLayer();
      details.showClass(c, model, compare ? compare.c : null);
    }

    /* Sets the size sliders to fill the free view, never below the sizes that keep node boxes and
     * labels apart (fit() then zooms out); returns the node radius scale. */
    function setDefaultSize() {
      const view = viewSize();
      const size = SF.layout.sizes(model, {
        width: view.width - MARGIN.left - MARGIN.right, height: view.height - MARGIN.top - MARGIN.bottom });
      SF.layout.setSlider(widthInput, size.minWidth, size.width);
      SF.layout.setSlider(heightInput, size.minHeight, size.height);
      return size.radius;
    }

    function drawBands() {
      layerBands = bands.selectAll("g.layer-band").data(model.rows, (layer) => layer)
        .join((enter) => {
          const band = enter.append("g").attr("class", "layer-band").on("click", (event, layer) => store.set({ layer }));
          band.append("rect").attr("class", "band");
          band.append("text").attr("class", "layer-label").attr("x", -MARGIN.left + 8).attr("dy", "0.35em").text((layer) => layer);
          return band;
        })
        .order();
    }

    function drawEdges(edgeWidth) {
      edges = edgeGroup.selectAll("path").data(model.edges).join("path")
        .attr("class", "edge")
        .attr("stroke-width", (e) => edgeWidth(e.inf));
    }

    /* A node: its shape and picture (node-images.js), and its channel number below. */
    function drawNodes(radius) {
      nodeGroup.selectAll("g.node").remove();
      nodes = nodeGroup.selectAll("g.node").data(model.nodes).join("g")
        .attr("class", "node")
        .attr("data-layer", (n) => n.layer)
        .attr("data-channel", (n) => n.channel)
        .attr("tabindex", 0)  // keyboard users reach the details with Tab
        .attr("aria-label", (n) => `${n.layer} channel ${n.channel}`)
        .on("mouseenter focus", (event, n) => pinned || focus(n))
        .on("mouseleave blur", () => pinned || focus(null))
        .on("click", (event, n) => pin(n))
        .on("keydown", (event, n) => {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); pin(n); }
        });
      SF.nodeImages.draw(nodes, radius, data);
      nodes.append("text").attr("class", "channel-label").attr("dy", (n) => radius(n.count) + 11).text((n) => n.channel);
    }

    /* The part of the canvas not covered by the details panel. */
    function viewSize() {
      const detailsWidth = document.getElementById("details").offsetWidth + 12;
      return { width: canvas.clientWidth - detailsWidth, height: canvas.clientHeight };
    }

    function place(animate) {
      const width = Number(widthInput.value), height = Number(heightInput.value);
      SF.graphModel.position(model, width, height);
      const move = (selection) => (animate ? selection.transition().duration(DURATION) : selection);
      move(nodes).attr("transform", (n) => `translate(${n.x},${n.y})`);
      move(edges).attr("d", (e) => link({ source: e.source, target: e.target }));
      const gap = model.rows.length > 1 ? height / (model.rows.length - 1) : 0;
      move(layerBands).attr("transform", (layer, row) => `translate(0,${row * gap})`);
      layerBands.select("rect")
        .attr("x", -MARGIN.left).attr("y", -gap / 2)
        .attr("width", width + MARGIN.left + MARGIN.right).attr("height", gap);
    }

    /* Zooms so that the whole layout fits the view, at most at 1:1. */
    function fit() {
      const width = Number(widthInput.value) + MARGIN.left + MARGIN.right;
      const height = Number(heightInput.value) + MARGIN.top + MARGIN.bottom;
      const view = viewSize();
      const k = Math.min(1, view.width / width, view.height / height);
      const x = (view.width - width * k) / 2 + MARGIN.left * k, y = (view.height - height * k) / 2 + MARGIN.top * k;
      svg.call(zoom.transform, d3.zoomIdentity.translate(x, y).scale(k));
    }

    function applyFilter() {
      const min = Number(countInput.value);
      countOutput.textContent = d3.format(",")(min);
      const shown = (n) => n.count >= min;
      const edgeShown = (e) => shown(e.source) && shown(e.target);
      nodes.classed("filtered", (n) => !shown(n));
      edges.classed("filtered", (e) => !edgeShown(e));
      stats.textContent = `${model.nodes.filter(shown).length} of ${model.nodes.length} channels · `
        + `${model.edges.filter(edgeShown).length} of ${model.edges.length} connections`;
    }

    function focus(node) {
      svg.classed("focused", Boolean(node));
      nodes.classed("lit", (n) => node !== null && (n === node || node.above.includes(n) || node.below.includes(n)));
      edges.classed("lit", (e) => node !== null && (e.source === node || e.target === node));
      if (node) details.showNode(node, node === pinned);
      else details.showClass(store.get("graph").c, model, store.get("graph").compare?.c ?? null);
    }

    /* Pins `node`, or releases it if it is pinned; either way it stays shown, as it is under the pointer. */
    function pin(node) {
      pinned = pinned === node ? null : node;
      nodes.classed("pinned", (n) => n === pinned);
      focus(node);
    }

    function showCurrentLayer() {
      layerBands.classed("current", (layer) => layer === store.get("layer"));
    }

    document.getElementById("graph-fit").addEventListener("click", () => model && fit());
    widthInput.addEventListener("input", () => model && place(true));
    heightInput.addEventListener("input", () => model && place(true));
    countInput.addEventListener("input", () => model && applyFilter());
    store.on("graph", render);
    store.on("layer", showCurrentLayer);
  };
})(window.SF = window.SF || {});

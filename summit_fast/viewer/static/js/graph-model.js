/* An attribution graph (ag-{c}.json) as nodes, edges and rows, and its layered layout.
 *
 * Row 0 is the last layer (drawn on top). A node's prev_channels are its edges to the row below.
 * Within rows, nodes are ordered by barycentre sweeps (each node placed at the mean position of
 * its neighbours in the adjacent row, alternately downwards and upwards), which shortens edges and
 * removes most crossings in graphs of Summit's size (tens of nodes).
 */
(function (SF) {
  "use strict";

  const SWEEPS = 4;

  function build(ag, layers) {
    const rows = layers.slice().reverse().filter((layer) => Array.isArray(ag[layer]));
    const nodes = [];
    const byKey = new Map();
    rows.forEach((layer, row) => {
      for (const raw of ag[layer]) {
        const node = {
          id: `${layer}:${raw.channel}`,
          layer,
          row,
          channel: raw.channel,
          count: raw.count,
          pagerank: raw.pagerank,
          sources: raw.attr_channels || [],
          prev: raw.prev_channels || [],
          in: raw.in,          // comparing two classes: "both", "first" or "second" (compare.js)
          counts: raw.counts,  // comparing: [count in the first class, in the second] (null where absent)
          above: [],   // neighbours in the row above (the next layer)
          below: [],   // neighbours in the row below (the previous layer)
        };
        nodes.push(node);
        byKey.set(node.id, node);
      }
    });
    const edges = [];
    let unresolved = 0;
    for (const node of nodes) {
      const belowLayer = rows[node.row + 1];
      for (const link of node.prev) {
        const target = belowLayer && byKey.get(`${belowLayer}:${link.prev_channel}`);
        if (!target) {
          unresolved += 1;
          continue;
        }
        edges.push({ source: node, target, inf: link.inf, in: link.in });
        node.below.push(target);
        target.above.push(node);
      }
    }
    if (unresolved) console.warn(`${unresolved} prev_channels name channels that are not in the graph`);
    const byRow = rows.map((layer, row) => nodes.filter((n) => n.row === row));
    orderRows(byRow);
    return { rows, byRow, nodes, edges };
  }

  /* Sets node.slot (position in its row) and reorders each byRow entry by it. */
  function orderRows(byRow) {
    const relative = (node) => (node.slot + 0.5) / byRow[node.row].length;
    const reorder = (row, neighboursOf) => {
      const key = new Map(row.map((node) => {
        const neighbours = neighboursOf(node);
        return [node, neighbours.length ? d3.mean(neighbours, relative) : relative(node)];
      }));
      row.sort((a, b) => key.get(a) - key.get(b) || a.channel - b.channel);
      row.forEach((node, slot) => { node.slot = slot; });
    };
    for (const row of byRow) {
      row.sort((a, b) => b.count - a.count || a.channel - b.channel);
      row.forEach((node, slot) => { node.slot = slot; });
    }
    for (let sweep = 0; sweep < SWEEPS; sweep++) {
      const downwards = sweep % 2 === 0;
      for (let i = 1; i < byRow.length; i++) {
        const r = downwards ? i : byRow.length - 1 - i;
        reorder(byRow[r], (node) => (downwards ? node.above : node.below));
      }
    }
  }

  /* Sets node.x, node.y: rows `height / (rows - 1)` apart, each row spread evenly over `width`. */
  function position(model, width, height) {
    const gap = model.byRow.length > 1 ? height / (model.byRow.length - 1) : 0;
    for (const row of model.byRow) {
      for (const node of row) {
        node.x = ((node.slot + 0.5) * width) / row.length;
        node.y = node.row * gap;
      }
    }
  }

  SF.graphModel = { build, position };
})(window.SF = window.SF || {});

/* The sizes of the layered graph layout that keep node boxes and labels apart for any number of
 * layers and nodes. A node is a square box of side 2r (a disc, or a picture of that size) with its
 * channel number below it; rows are at least one box, one label and a gap apart, and nodes in the
 * widest row at least one box (or label) and a gap apart. A layout larger than the view is zoomed
 * out to fit, and can be zoomed in and panned. */
(function (SF) {
  "use strict";

  const RADIUS = [4, 16];      // node radius range (by count); boxes are 2r square
  const LABEL_HEIGHT = 14;     // the channel number below a box (10px text)
  const LABEL_WIDTH = 30;      // room for a four-digit channel number
  const GAP = 8;               // free space between neighbouring boxes or labels
  const MAX_ROW_GAP = 110;     // default vertical distance between layers, at most

  /* {radius (count -> r), minWidth, minHeight, width, height} for `model` in a view of `view`
   * (the free space): the defaults fill the view where the minimums allow. */
  function sizes(model, view) {
    const widest = d3.max(model.byRow, (row) => row.length) || 1;
    const gaps = Math.max(1, model.rows.length - 1);
    const radius = d3.scaleSqrt().domain([0, d3.max(model.nodes, (n) => n.count) || 1]).range(RADIUS);
    const minWidth = widest * (Math.max(2 * RADIUS[1], LABEL_WIDTH) + GAP);
    const minHeight = gaps * (2 * RADIUS[1] + LABEL_HEIGHT + GAP);
    return {
      radius,
      minWidth,
      minHeight,
      width: Math.max(minWidth, view.width),
      height: Math.max(minHeight, Math.min(view.height, MAX_ROW_GAP * gaps)),
    };
  }

  /* Limits a size slider to [min, max(min, its usual max)] and sets its value. */
  function setSlider(input, min, value) {
    input.min = Math.ceil(min);
    input.max = Math.max(Number(input.dataset.max || (input.dataset.max = input.max)), Math.ceil(min) * 2);
    input.value = Math.ceil(value);
  }

  SF.layout = { sizes, setSlider };
})(window.SF = window.SF || {});

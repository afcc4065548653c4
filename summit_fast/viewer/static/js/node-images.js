/* How a node of the attribution graph is drawn. As in Summit, a channel is shown as its feature
 * visualisation, clipped to a rounded square of the node's size; a channel without one shows its
 * top dataset example instead, and one without either a circle. The index says which pictures
 * exist (data-source.js), so no missing one is asked for; of an older export, which does not say,
 * a picture that fails to load is removed, leaving the square. */
(function (SF) {
  "use strict";

  const CLIP_ID = "node-image-clip";
  const CORNER = 0.18;  // corner radius of the square, as a fraction of its side

  /* The picture a node is drawn as, or null. */
  function pictureUrl(data, n) {
    return data.featureVisUrl(n.layer, n.channel) || data.datasetExampleUrls(n.layer, n.channel, 1)[0] || null;
  }

  SF.nodeImages = {
    /* Adds the pictures' clip path to the graph's <defs>. */
    define(defs) {
      defs.append("clipPath")
        .attr("id", CLIP_ID)
        .attr("clipPathUnits", "objectBoundingBox")
        .append("rect").attr("width", 1).attr("height", 1).attr("rx", CORNER).attr("ry", CORNER);
    },

    /* Appends each node's shape to its <g>, sized by `radius(n)`: a disc under the picture (or
     * alone), the picture, and a ring on top (which hover and pin outline). */
    draw(nodes, radius, data) {
      const r = (n) => radius(n.count);
      const square = (selection, tag, className) => selection.append(tag).attr("class", className)
        .attr("x", (n) => -r(n)).attr("y", (n) => -r(n)).attr("width", (n) => 2 * r(n)).attr("height", (n) => 2 * r(n));
      const pictured = nodes.filter((n) => pictureUrl(data, n)).classed("pictured", true);
      const plain = nodes.filter((n) => !pictureUrl(data, n));
      plain.append("circle").attr("class", "disc").attr("r", r);
      square(pictured, "rect", "disc").attr("rx", (n) => 2 * CORNER * r(n));
      square(pictured, "image", "node-image")
        .attr("clip-path", `url(#${CLIP_ID})`)
        .attr("preserveAspectRatio", "xMidYMid slice")
        .on("load", function () { this.classList.add("loaded"); })
        .on("error", function () { this.remove(); })
        .attr("href", (n) => pictureUrl(data, n));
      plain.append("circle").attr("class", "ring").attr("r", r);
      square(pictured, "rect", "ring").attr("rx", (n) => 2 * CORNER * r(n));
    },
  };
})(window.SF = window.SF || {});

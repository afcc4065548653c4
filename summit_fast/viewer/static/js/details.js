/* The details panel beside the graph: the selected class's summary, or, while a node is hovered or
 * pinned, that channel's numbers, its top sources and its pictures (feature visualisation, diversity
 * images, dataset examples). All text goes in as text. */
(function (SF) {
  "use strict";

  const DATASET_EXAMPLES = 10;
  const formatInt = d3.format(",");

  SF.createDetails = function ({ data }) {
    const root = d3.select("#details");

    function facts(list) {
      const dl = root.append("dl").attr("class", "facts");
      for (const [term, value, hint] of list) {
        dl.append("dt").text(term).attr("title", hint || null);
        dl.append("dd").text(value);
      }
    }

    /* An <img> shown only once it has loaded: absent pictures leave no broken icon. */
    function picture(parent, url, alt, className) {
      parent.append("img")
        .attr("class", className)
        .attr("alt", alt)
        .attr("hidden", "")
        .on("load", function () { this.hidden = false; })
        .on("error", function () { this.remove(); })
        .attr("src", url);
    }

    return {
      showClass(c, model) {
        const cls = data.classes[c];
        root.selectAll("*").remove();
        root.attr("data-node", null).classed("pinned", false);
        root.append("h3").text(cls.name);
        root.append("p").attr("class", "muted").text(`class #${cls.target_class}`);
        const rows = [["instances", Number.isFinite(cls.numOfInstances) ? formatInt(cls.numOfInstances) : "unknown"]];
        if (Number.isFinite(cls.topOneAcc)) rows.push(["top-1 accuracy", `${(100 * cls.topOneAcc).toFixed(1)}%`]);
        rows.push(["channels in graph", formatInt(model.nodes.length)], ["connections", formatInt(model.edges.length)]);
        facts(rows);
        root.append("p").attr("class", "hint")
          .text("Hover a channel to see its numbers, where its influence comes from, and what it detects; "
            + "click it to keep them here.");
      },

      /* `pinned`: the node was clicked, and its details stay until it is clicked again. */
      showNode(node, pinned) {
        root.selectAll("*").remove();
        root.attr("data-node", node.id).classed("pinned", pinned);
        root.append("h3").text(`${node.layer} · channel ${node.channel}`);
        if (pinned) root.append("p").attr("class", "muted pin-note").text("pinned · click the channel again to release");
        const featureVis = data.featureVisUrl(node.layer, node.channel);
        if (featureVis) picture(root, featureVis, `feature visualisation of ${node.layer} channel ${node.channel}`, "feature-vis");
        const diversity = data.diversityUrls(node.layer, node.channel);
        if (diversity.length) {
          const row = root.append("div").attr("class", "diversity").attr("title", "diversity: other images that make it fire");
          diversity.forEach((url, d) => picture(row, url, `diversity image ${d}`, "diversity-image"));
        }
        facts([
          ["count", formatInt(node.count), "images of this class for which the channel was among the most activated"],
          ["PageRank", node.pagerank.toPrecision(3), "importance in this class's graph (personalised PageRank)"],
          ["edges in graph", `${node.below.length} below · ${node.above.length} above`],
        ]);
        if (node.sources.length) {
          root.append("h4").text("Top sources").attr("title", "the previous channels that most often influenced this one");
          const list = root.append("ol").attr("class", "sources");
          for (const source of node.sources) {
            const item = list.append("li");
            item.append("span").text(`channel ${source.prev_channel}`);
            item.append("span").attr("class", "muted").text(`${formatInt(source.inf)} images`);
          }
        }
        const examples = data.datasetExampleUrls(node.layer, node.channel, DATASET_EXAMPLES);
        if (examples.length) {
          root.append("h4").text("Dataset examples");
          const grid = root.append("div").attr("class", "examples");
          examples.forEach((url, i) => picture(grid, url, `dataset example ${i}`, "example"));
        }
      },
    };
  };
})(window.SF = window.SF || {});

/* The details panel beside the graph: the selected class's summary, or, while a node is hovered or
 * pinned, that channel's numbers, its top sources (named by the layer or conv output they are
 * channels of) and its pictures (feature visualisation, diversity images, dataset examples). Counts
 * say of how many images ("83 of 183 images"). All text goes in as text. */
(function (SF) {
  "use strict";

  const DATASET_EXAMPLES = 10;
  const formatInt = d3.format(",");
  const plural = (n, word) => `${formatInt(n)} ${word}${n === 1 ? "" : "s"}`;
  /* "83 of 183 images" when the class's image count is known, else "83 images". */
  const ofImages = (n, total) => (Number.isFinite(total) ? `${formatInt(n)} of ${plural(total, "image")}` : plural(n, "image"));

  /* Where a node's attr_channels are: {source, conv, drawn} from the index's attr_sources (the first
   * conv whose output range holds the channel), or null when the index does not say (Summit's folders). */
  function sourceOf(index, node) {
    const writers = (index.attr_sources || {})[node.layer] || [];
    const writer = writers.find((w) => w.offset <= node.channel && node.channel < w.offset + w.channels);
    return writer ? { source: writer.source, conv: writer.conv, drawn: index.layers.includes(writer.source) } : null;
  }

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

    let shown = { first: null, second: null };  // the classes of the graph shown (second: compared)

    return {
      showClass(c, model, c2 = null) {
        const cls = data.classes[c];
        shown = { first: cls, second: c2 === null ? null : data.classes[c2] };
        root.selectAll("*").remove();
        root.attr("data-node", null).classed("pinned", false);
        root.append("h3").text(cls.name);
        root.append("p").attr("class", "muted").text(`class #${cls.target_class}`);
        const rows = [["instances", Number.isFinite(cls.numOfInstances) ? formatInt(cls.numOfInstances) : "unknown"]];
        if (Number.isFinite(cls.topOneAcc)) rows.push(["top-1 accuracy", `${(100 * cls.topOneAcc).toFixed(1)}%`]);
        rows.push(["channels in graph", formatInt(model.nodes.length)], ["connections", formatInt(model.edges.length)]);
        if (shown.second) {
          const count = (which) => formatInt(model.nodes.filter((n) => n.in === which).length);
          rows.push(["compared with", shown.second.name], ["channels in both", count("both")],
            [`only ${cls.name}`, count("first")], [`only ${shown.second.name}`, count("second")]);
        }
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
        // Comparing: a channel only in the second class's graph has that class's numbers.
        const cls = node.in === "second" ? shown.second : shown.first;
        const rows = node.counts && shown.second
          ? [[`count in ${shown.first.name}`, node.counts[0] === null ? "not in its graph" : ofImages(node.counts[0], shown.first.numOfInstances)],
            [`count in ${shown.second.name}`, node.counts[1] === null ? "not in its graph" : ofImages(node.counts[1], shown.second.numOfInstances)]]
          : [["count", ofImages(node.count, cls.numOfInstances), "images of this class for which the channel was among the most activated"]];
        facts(rows.concat([
          ["PageRank", node.pagerank.toPrecision(3), `importance in ${cls.name}'s graph (personalised PageRank)`],
          ["edges in graph", `${node.below.length} below · ${node.above.length} above`],
        ]));
        if (node.sources.length) {
          const where = sourceOf(data.index, node);
          root.append("h4").text("Top sources")
            .attr("title", `the channels that most often influenced this one, among ${cls.name}'s images`);
          root.append("p").attr("class", "sources-in muted").text(!where
            ? "channels of the input of the conv that writes this channel (not drawn in the graph)"
            : `channels of ${where.source}${where.drawn ? "" : " (not drawn in the graph)"}, the input of conv ${where.conv}`);
          const list = root.append("ol").attr("class", "sources");
          for (const source of node.sources) {
            const item = list.append("li");
            item.append("span").text(where ? `${where.source} channel ${source.prev_channel}` : `channel ${source.prev_channel}`);
            item.append("span").attr("class", "muted").text(ofImages(source.inf, cls.numOfInstances));
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

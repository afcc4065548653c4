/* Similarity of classes in one layer: the cosine of their activation-count rows (a class's
 * topChannels, {c: channel, i: count}), as SPEC.md asks (Summit used channel indices instead). */
(function (SF) {
  "use strict";

  /* Per layer, each class's row as a Map channel -> count, with its Euclidean norm; built lazily. */
  function createSimilarity(classes) {
    const rowsByLayer = new Map();

    function rows(layer) {
      if (!rowsByLayer.has(layer)) {
        rowsByLayer.set(layer, classes.map((cls) => {
          const entries = (cls.topChannels && cls.topChannels[layer]) || [];
          const counts = new Map(entries.map((e) => [e.c, e.i]));
          return { counts, norm: Math.hypot(...counts.values()) };
        }));
      }
      return rowsByLayer.get(layer);
    }

    return {
      /* Cosine similarity of every class to class `target` in `layer` (0 for an empty row). */
      scores(layer, target) {
        const all = rows(layer);
        const ref = all[target];
        return all.map((row) => {
          if (!ref.norm || !row.norm) return 0;
          let dot = 0;
          const [small, large] = row.counts.size < ref.counts.size ? [row.counts, ref.counts] : [ref.counts, row.counts];
          for (const [channel, count] of small) dot += count * (large.get(channel) || 0);
          return dot / (ref.norm * row.norm);
        });
      },
    };
  }

  SF.createSimilarity = createSimilarity;
})(window.SF = window.SF || {});

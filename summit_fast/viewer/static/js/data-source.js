/* Reading an exported folder: the index (summit_fast.json), the class list and, on demand, one
 * class's attribution graph; and building image addresses from the index's patterns.
 *
 * data.js (written by the server, or by `summit-fast view DIR --static DEST` for opening from disk)
 * sets window.SUMMIT_FAST_DATA = {base, files}: `base` is the data folder's address relative to the
 * page, `files` (disk copies only) holds the JSON files, since browsers refuse fetch() on file://.
 */
(function (SF) {
  "use strict";

  const SCHEMA = "summit_fast.export";
  /* Versions read (summit_fast.viewer.index.READABLE_VERSIONS): version 1 numbered the graph files
     ag-{c}.json by row of classes.json, version 2 by the class's target_class. */
  const SCHEMA_VERSIONS = [1, 2];
  const DISK_HINT = "Pages opened from disk cannot fetch data. Serve the folder with `summit-fast view DIR`, "
    + "or write a copy that opens from disk with `summit-fast view DIR --static DEST`.";

  function reader(config) {
    if (config.files) {
      return (path) => (path in config.files
        ? Promise.resolve(config.files[path])
        : Promise.reject(new Error(`${path} is not in data.js; write the copy again`)));
    }
    return async (path) => {
      let response;
      try {
        response = await fetch(config.base + path);
      } catch (error) {
        throw new Error(location.protocol === "file:" ? DISK_HINT : `${path}: ${error.message}`);
      }
      if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
      return response.json();
    };
  }

  /* Replaces {name} fields of a pattern; values are URL-encoded, so data can't leave the folder. */
  function fillPattern(pattern, fields) {
    return pattern.replace(/\{(\w+)\}/g, (match, key) => encodeURIComponent(String(fields[key])));
  }

  /* Resolves to the data source, or rejects with a message fit for the user. */
  SF.openData = async function () {
    const config = window.SUMMIT_FAST_DATA;
    if (!config) throw new Error(`data.js did not load. ${DISK_HINT}`);
    const read = reader(config);
    const index = await read("summit_fast.json");
    if (index.schema !== SCHEMA || !SCHEMA_VERSIONS.includes(index.version)) {
      throw new Error(`summit_fast.json: expected schema ${SCHEMA} version ${SCHEMA_VERSIONS.join(" or ")}, `
        + `found ${index.schema} version ${index.version}`);
    }
    const classes = await read(index.classes);
    if (classes.length !== index.num_classes) {
      throw new Error(`${index.classes} lists ${classes.length} classes, summit_fast.json says ${index.num_classes}`);
    }
    const graphs = new Map();
    const images = index.images || {};
    return {
      index,
      classes,
      /* The attribution graph of classes[c] (a promise, fetched once); its file is named by the
         model's class index, target_class (not the row c when a run counted only some classes),
         or by the row in a version 1 export. */
      graph(c) {
        const number = index.version === 1 ? c : classes[c].target_class;
        if (!graphs.has(c)) graphs.set(c, read(fillPattern(index.graphs, { c: number })));
        return graphs.get(c);
      },
      featureVisUrl(layer, channel) {
        return images.feature_vis ? config.base + fillPattern(images.feature_vis, { layer, channel }) : null;
      },
      /* Addresses of the first `n` dataset examples; the page hides those that fail to load. */
      datasetExampleUrls(layer, channel, n) {
        if (!images.dataset_examples) return [];
        return d3.range(n).map((i) => config.base + fillPattern(images.dataset_examples, { layer, channel, i }));
      },
    };
  };
})(window.SF = window.SF || {});

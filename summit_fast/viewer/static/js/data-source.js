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
     ag-{c}.json by row of classes.json, version 2 by the class's target_class; version 3 lists which
     image files exist, with each layer's file-name form for the patterns' {layer}. */
  const SCHEMA_VERSIONS = [1, 2, 3];
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

  /* Which image files exist, from the index's images.files (version 3): per layer its file-name form
     (what fills {layer}), the channels with a feature visualisation and per channel the number of
     diversity images and dataset examples. An older export lists none: every picture is taken to
     exist (the page hides those that fail to load), with the layer's name as it is. */
  function imageFiles(index) {
    const files = index.version >= 3 ? (index.images && index.images.files) || {} : null;
    const featureVis = new Map(Object.entries(files || {}).map(([layer, f]) => [layer, new Set(f.feature_vis)]));
    return {
      name: (layer) => (files ? (files[layer] || {}).name : layer),
      hasFeatureVis: (layer, channel) => !files || Boolean(featureVis.get(layer)?.has(channel)),
      /* Files 0 .. count-1 of `field` ("diversity" or "dataset_examples") exist; `unlisted`: the count
         taken for an older export. */
      count: (field, layer, channel, unlisted) => (files ? ((files[layer] || {})[field] || {})[channel] || 0 : unlisted),
    };
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
    const listed = imageFiles(index);
    const url = (field, layer, fields) => config.base + fillPattern(images[field], { layer: listed.name(layer), ...fields });
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
      /* The address of a channel's feature visualisation, or null where there is none. */
      featureVisUrl(layer, channel) {
        return images.feature_vis && listed.hasFeatureVis(layer, channel) ? url("feature_vis", layer, { channel }) : null;
      },
      /* Addresses of a channel's diversity images (none in exports before version 3). */
      diversityUrls(layer, channel) {
        if (!images.diversity) return [];
        return d3.range(listed.count("diversity", layer, channel, 0)).map((d) => url("diversity", layer, { channel, d }));
      },
      /* Addresses of the first `n` (at most) dataset examples; of an export before version 3, which does
         not say which exist, `n` of them, and the page hides those that fail to load. */
      datasetExampleUrls(layer, channel, n) {
        if (!images.dataset_examples) return [];
        const count = Math.min(n, listed.count("dataset_examples", layer, channel, n));
        return d3.range(count).map((i) => url("dataset_examples", layer, { channel, i }));
      },
    };
  };
})(window.SF = window.SF || {});

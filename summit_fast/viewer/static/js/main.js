/* Start-up: load the data, create the shared state and the views, and load the selected class's
 * graph whenever the selection changes. */
(function (SF) {
  "use strict";

  async function main() {
    SF.status.info("Loading…");
    let data;
    try {
      data = await SF.openData();
    } catch (error) {
      SF.status.error(error.message);
      return;
    }
    SF.status.info("");
    const layers = data.index.layers;
    const fromUrl = SF.urlState.read(data.index, data.classes);
    const store = SF.createStore({
      selected: fromUrl.selected ?? 0,
      layer: fromUrl.layer ?? layers[layers.length - 1],
      compare: fromUrl.compare ?? null,
      graph: null,
    });

    const layerMenu = document.getElementById("layer-select");
    SF.fillSelect(layerMenu, layers.slice().reverse());
    layerMenu.value = store.get("layer");
    layerMenu.addEventListener("change", () => store.set({ layer: layerMenu.value }));
    store.on("layer", (layer) => { layerMenu.value = layer; });

    SF.createSidebar({ data, store, similarity: SF.createSimilarity(data.classes) });
    SF.createEmbedding({ data, store });
    SF.createGraphView({ data, store, details: SF.createDetails({ data }) });
    SF.compare.createControl({ data, store });
    SF.urlState.follow(store, data.classes);

    /* The selected class's graph, and the compared class's (none when it is the selected one). */
    function loadGraph() {
      const c = store.get("selected"), other = store.get("compare");
      const c2 = other !== null && other !== c ? other : null;
      document.title = `${data.classes[c].name} · Summit`;
      const named = (k) => data.graph(k).catch((error) => {
        throw new Error(`Graph of ${data.classes[k].name}: ${error.message}`);
      });
      Promise.all([named(c), c2 === null ? null : named(c2)]).then(
        ([ag, ag2]) => {
          if (store.get("selected") === c && store.get("compare") === other) {
            store.set({ graph: { c, ag, compare: c2 === null ? null : { c: c2, ag: ag2 } } });
          }
        },
        (error) => SF.status.error(error.message),
      );
    }
    store.on("selected", loadGraph);
    store.on("compare", loadGraph);
    loadGraph();
  }

  main();
})(window.SF = window.SF || {});

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
    SF.urlState.follow(store, data.classes);

    function loadGraph(c) {
      document.title = `${data.classes[c].name} · Summit`;
      data.graph(c).then(
        (ag) => { if (store.get("selected") === c) store.set({ graph: { c, ag } }); },
        (error) => SF.status.error(`Graph of ${data.classes[c].name}: ${error.message}`),
      );
    }
    store.on("selected", loadGraph);
    loadGraph(store.get("selected"));
  }

  main();
})(window.SF = window.SF || {});

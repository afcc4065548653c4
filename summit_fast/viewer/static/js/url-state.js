/* The selected class and layer in the address (#class=3&layer=mixed4d), so that a view can be
 * bookmarked, shared and reloaded. The class is named by the model's class index (its
 * target_class, as shown on the page), not by its row: the two differ when a run counted only
 * some classes. */
(function (SF) {
  "use strict";

  SF.urlState = {
    /* {selected (a row), layer} from the address; either is undefined when absent or not in the data. */
    read(index, classes) {
      const params = new URLSearchParams(location.hash.slice(1));
      const text = params.get("class");
      const target = text !== null && /^\d+$/.test(text) ? Number(text) : null;
      const row = target === null ? -1 : classes.findIndex((cls) => cls.target_class === target);
      const layer = params.get("layer");
      return {
        selected: row >= 0 ? row : undefined,
        layer: index.layers.includes(layer) ? layer : undefined,
      };
    },

    follow(store, classes) {
      const write = () => {
        const params = new URLSearchParams({ class: classes[store.get("selected")].target_class, layer: store.get("layer") });
        history.replaceState(null, "", `#${params}`);
      };
      store.on("selected", write);
      store.on("layer", write);
    },
  };
})(window.SF = window.SF || {});

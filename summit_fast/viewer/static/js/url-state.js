/* The selected class and layer in the address (#class=3&layer=mixed4d), so that a view can be
 * bookmarked, shared and reloaded. */
(function (SF) {
  "use strict";

  SF.urlState = {
    /* {selected, layer} from the address; either is undefined when absent or not in the data. */
    read(index) {
      const params = new URLSearchParams(location.hash.slice(1));
      const c = Number(params.get("class"));
      const layer = params.get("layer");
      return {
        selected: params.has("class") && Number.isInteger(c) && c >= 0 && c < index.num_classes ? c : undefined,
        layer: index.layers.includes(layer) ? layer : undefined,
      };
    },

    follow(store) {
      const write = () => {
        const params = new URLSearchParams({ class: store.get("selected"), layer: store.get("layer") });
        history.replaceState(null, "", `#${params}`);
      };
      store.on("selected", write);
      store.on("layer", write);
    },
  };
})(window.SF = window.SF || {});

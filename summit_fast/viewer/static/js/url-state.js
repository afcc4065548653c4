/* The selected class, layer and compared class in the address (#class=3&layer=mixed4d&compare=7),
 * so that a view can be bookmarked, shared and reloaded. Classes are named by the model's class
 * index (their target_class, as shown on the page), not by their row: the two differ when a run
 * counted only some classes. */
(function (SF) {
  "use strict";

  SF.urlState = {
    /* {selected, compare (rows), layer} from the address; each is undefined when absent or not in the data. */
    read(index, classes) {
      const params = new URLSearchParams(location.hash.slice(1));
      const rowOf = (text) => {
        const target = text !== null && /^\d+$/.test(text) ? Number(text) : null;
        const row = target === null ? -1 : classes.findIndex((cls) => cls.target_class === target);
        return row >= 0 ? row : undefined;
      };
      const layer = params.get("layer");
      return {
        selected: rowOf(params.get("class")),
        compare: rowOf(params.get("compare")),
        layer: index.layers.includes(layer) ? layer : undefined,
      };
    },

    follow(store, classes) {
      const write = () => {
        const params = new URLSearchParams({ class: classes[store.get("selected")].target_class, layer: store.get("layer") });
        if (store.get("compare") !== null) params.set("compare", classes[store.get("compare")].target_class);
        history.replaceState(null, "", `#${params}`);
      };
      store.on("selected", write);
      store.on("layer", write);
      store.on("compare", write);
    },
  };
})(window.SF = window.SF || {});

/* Shared application state: one plain object with listeners per key.
 *
 * The views never call each other; each sets the keys it owns (the sidebar and the embedding set
 * `selected`, the layer menu sets `layer`, ...) and redraws when keys it shows change. Keys:
 * selected (class index), layer (layer name), graph ({c, ag}: the selected class's graph, once loaded).
 *
 * The scripts are classic scripts sharing the `SF` namespace rather than ES modules, because
 * browsers refuse ES modules on pages opened from disk (file://).
 */
(function (SF) {
  "use strict";

  SF.createStore = function (initial) {
    const state = Object.assign({}, initial);
    const listeners = new Map();
    return {
      get: (key) => state[key],
      /* Assigns every key of `patch`, then notifies the listeners of the keys whose value changed. */
      set(patch) {
        const changed = Object.keys(patch).filter((key) => state[key] !== patch[key]);
        Object.assign(state, patch);
        for (const key of changed) {
          for (const listener of listeners.get(key) || []) listener(state[key]);
        }
      },
      on(key, listener) {
        if (!listeners.has(key)) listeners.set(key, []);
        listeners.get(key).push(listener);
      },
    };
  };
})(window.SF = window.SF || {});

/* Small page-wide widgets: the hover tooltip and the status line. Both take text only. */
(function (SF) {
  "use strict";

  const tooltip = document.getElementById("tooltip");
  const status = document.getElementById("status");

  SF.tooltip = {
    show(text, event) {
      tooltip.textContent = text;
      tooltip.hidden = false;
      tooltip.style.left = `${event.clientX + 14}px`;
      tooltip.style.top = `${event.clientY + 10}px`;
    },
    hide() {
      tooltip.hidden = true;
    },
  };

  SF.status = {
    /* A message that stays until cleared, e.g. why the data could not be loaded. */
    error(text) {
      status.textContent = text;
      status.classList.add("error");
      status.hidden = false;
    },
    info(text) {
      status.textContent = text;
      status.classList.remove("error");
      status.hidden = !text;
    },
  };

  /* Fills a <select> with text options (names come from data files, so never as HTML). */
  SF.fillSelect = function (select, values, labelOf) {
    select.replaceChildren(...values.map((value) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = labelOf ? labelOf(value) : value;
      return option;
    }));
  };
})(window.SF = window.SF || {});

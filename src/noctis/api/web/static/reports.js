// The report editor (/ui/reports/...): the draft is saved while the radiologist types (a
// debounced PUT to the REST API), templates and snippets are put into the text. Without this
// script the page still works: the sign form carries the text and saves it before signing.
"use strict";

(function () {
  const text = document.getElementById("report-text");
  if (!text) return;
  const status = document.getElementById("save-status");
  const url = text.dataset.draftUrl;
  const DELAY_MS = 800;
  let timer = null;
  let saved = text.value;
  let templateId = null;

  function show(message, failed) {
    if (!status) return;
    status.textContent = message;
    status.classList.toggle("failed", Boolean(failed));
  }

  async function save() {
    timer = null;
    const value = text.value;
    if (value === saved && templateId === null) return;
    show("Saving…");
    const body = { text: value };
    if (templateId !== null) body.template_id = templateId;
    try {
      const response = await fetch(url, {
        method: "PUT",
        credentials: "same-origin",
        keepalive: true, // a save started as the page closes still reaches the archive
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        let detail = response.statusText;
        try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
        show("Not saved: " + detail, true);
        return;
      }
      saved = value;
      templateId = null;
      show("Draft saved " + new Date().toISOString().slice(11, 19) + " UTC");
    } catch (error) {
      show("Not saved (offline?): the text is still here; it is saved with the next change.", true);
    }
  }

  function changed() {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(save, DELAY_MS);
  }

  function insert(snippet) {
    const start = text.selectionStart ?? text.value.length;
    const end = text.selectionEnd ?? start;
    text.value = text.value.slice(0, start) + snippet + text.value.slice(end);
    text.selectionStart = text.selectionEnd = start + snippet.length;
    text.focus();
    changed();
  }

  text.addEventListener("input", changed);
  window.addEventListener("beforeunload", function () { if (timer !== null) save(); });

  const picker = document.getElementById("template-picker");
  if (picker) {
    picker.addEventListener("change", function () {
      const option = picker.selectedOptions[0];
      if (!option || !option.value) return;
      if (text.value.trim() && !window.confirm("Replace the text with the template?")) {
        picker.value = "";
        return;
      }
      text.value = option.dataset.text;
      templateId = Number(option.value);
      picker.value = "";
      changed();
    });
  }
  document.querySelectorAll("button.snippet").forEach(function (button) {
    button.addEventListener("click", function () { insert(button.dataset.text); });
  });
})();

// Progressive enhancement for every page; pages work without it.

// htmx sends the session's CSRF token with every request it makes.
document.addEventListener("htmx:configRequest", (event) => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) {
    event.detail.headers["X-CSRFToken"] = meta.content;
  }
});

// Forms that destroy something ask first (data-confirm="Question?").
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// After a refused submission, move focus to the error summary so screen readers announce it.
const summary = document.querySelector(".form-errors");
if (summary instanceof HTMLElement) {
  summary.focus();
}

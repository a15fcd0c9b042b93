// Course builder: reorder modules and items by drag and drop (SortableJS) and
// by keyboard.  Without this script the Move up / Move down buttons are plain
// forms and still work; with it they update the list in place.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const statusRegion = document.getElementById("builder-status");
const errorRegion = document.getElementById("builder-error");

function announce(message) {
  if (statusRegion) {
    statusRegion.textContent = "";
    window.setTimeout(() => { statusRegion.textContent = message; }, 50);
  }
}

function showError(message) {
  if (errorRegion) {
    errorRegion.textContent = message;
    errorRegion.hidden = false;
  }
}

function clearError() {
  if (errorRegion) {
    errorRegion.hidden = true;
    errorRegion.textContent = "";
  }
}

async function post(url, pairs) {
  const body = new URLSearchParams();
  for (const [key, value] of pairs) {
    body.append(key, value);
  }
  const response = await fetch(url, {
    method: "POST",
    body,
    credentials: "same-origin",
    headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new Error((data && data.detail) || response.statusText);
  }
  return data;
}

const rowsOf = (list) => Array.from(list.children).filter((el) => el.matches(".sortable-row"));

function refreshButtons(list) {
  const rows = rowsOf(list);
  rows.forEach((row, index) => {
    const controls = row.querySelector(":scope > .move-form, :scope > .row-head > .move-form, :scope > .row-actions > .move-form");
    if (!controls) {
      return;
    }
    const up = controls.querySelector('[data-direction="up"]');
    const down = controls.querySelector('[data-direction="down"]');
    if (up) up.setAttribute("aria-disabled", String(index === 0));
    if (down) down.setAttribute("aria-disabled", String(index === rows.length - 1));
  });
}

function applyOrder(list, ids) {
  const byId = new Map(rowsOf(list).map((row) => [row.dataset.id, row]));
  if (ids.length !== byId.size || !ids.every((id) => byId.has(id))) {
    // Someone else changed this list meanwhile: show the server's version.
    window.location.reload();
    return;
  }
  const active = document.activeElement;
  for (const id of ids) {
    const row = byId.get(id);
    if (row) list.appendChild(row);
  }
  refreshButtons(list);
  if (active instanceof HTMLElement && document.activeElement !== active) {
    active.focus();
  }
}

// Messages come translated from the page (data-* attributes with {placeholders}).
function message(name, values) {
  let text = statusRegion?.dataset[name] ?? "";
  for (const [key, value] of Object.entries(values)) {
    text = text.replace(`{${key}}`, value);
  }
  return text;
}

function positionMessage(list, row) {
  const rows = rowsOf(list);
  return message(list.dataset.kind === "module" ? "movedModule" : "movedItem", {
    title: row.dataset.title ?? "",
    position: String(rows.indexOf(row) + 1),
    count: String(rows.length),
  });
}

async function move(row, direction, focusTarget) {
  const list = row.parentElement;
  const form = row.querySelector(":scope > .move-form, :scope > .row-head > .move-form, :scope > .row-actions > .move-form");
  if (!list || !form) return;
  clearError();
  try {
    const data = await post(form.action, [["direction", direction]]);
    applyOrder(list, data.ids);
    if (focusTarget instanceof HTMLElement) focusTarget.focus();
    announce(positionMessage(list, row));
  } catch (error) {
    showError(message("errorReload", { error: error.message }));
  }
}

// Move up / Move down buttons: send them without leaving the page.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.classList.contains("move-form")) return;
  event.preventDefault();
  const button = event.submitter;
  if (!(button instanceof HTMLButtonElement) || button.getAttribute("aria-disabled") === "true") return;
  const row = form.closest(".sortable-row");
  if (row) move(row, button.value, button);
});

// Alt+Arrow Up / Alt+Arrow Down anywhere in a row, or the arrow keys on a drag handle.
document.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
  const target = event.target;
  if (!(target instanceof HTMLElement)) return;
  const onHandle = target.classList.contains("drag-handle");
  if (!event.altKey && !onHandle) return;
  if (target.matches("input, textarea, select")) return;
  const row = target.closest(".sortable-row");
  if (!row) return;
  event.preventDefault();
  const direction = event.key === "ArrowUp" ? "up" : "down";
  const rows = rowsOf(row.parentElement);
  const index = rows.indexOf(row);
  if ((direction === "up" && index === 0) || (direction === "down" && index === rows.length - 1)) return;
  move(row, direction, target);
});

// Drag and drop within one list; the new order is sent as every id of the list.
function makeSortable(list) {
  if (typeof window.Sortable !== "function") return;
  for (const handle of list.querySelectorAll(":scope > .sortable-row > .drag-handle, :scope > .sortable-row > .row-head > .drag-handle")) {
    handle.hidden = false;
  }
  window.Sortable.create(list, {
    handle: list.dataset.handle,
    draggable: ".sortable-row",
    animation: 150,
    onEnd: async (event) => {
      if (event.oldIndex === event.newIndex) return;
      const ids = rowsOf(list).map((row) => row.dataset.id);
      clearError();
      try {
        const data = await post(list.dataset.reorderUrl, ids.map((id) => ["ids", id]));
        applyOrder(list, data.ids);
        announce(positionMessage(list, event.item));
      } catch (error) {
        showError(message("errorReloading", { error: error.message }));
        window.setTimeout(() => window.location.reload(), 2500);
      }
    },
  });
}

for (const list of document.querySelectorAll("[data-reorder-url]")) {
  makeSortable(list);
}

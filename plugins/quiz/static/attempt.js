// Quiz attempt page: countdown, autosave and keyboard reordering.
// Without this module the page still works: the Save button posts the form,
// and the Move up/down buttons reorder on the server.

const form = document.getElementById("quiz-form");
const status = document.getElementById("quiz-save-status");

function formatTime(seconds) {
  const s = Math.max(0, seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

// The server's remaining seconds are counted down locally; the server alone
// decides whether an answer arrives in time.
function startTimer() {
  const timer = document.getElementById("quiz-timer");
  if (!timer) return;
  const value = timer.querySelector(".quiz-timer-value");
  const alert = document.getElementById("quiz-timer-alert");
  const end = Date.now() + Number(timer.dataset.remaining) * 1000;
  const warnings = new Set([300, 60]);
  const tick = () => {
    const left = Math.round((end - Date.now()) / 1000);
    value.textContent = formatTime(left);
    for (const w of warnings) {
      if (left <= w) {
        warnings.delete(w);
        alert.textContent = w === 60 ? "One minute left." : "Five minutes left.";
      }
    }
    if (left <= 0) {
      alert.textContent = "Time is up.";
      timer.classList.add("quiz-timer-over");
      return;
    }
    window.setTimeout(tick, 1000);
  };
  tick();
}

let pending = null;
let saving = Promise.resolve();

async function save() {
  const body = new FormData(form);
  body.set("action", "save");
  // form.action would be the button named "action", not the attribute
  const response = await fetch(form.getAttribute("action"), {
    method: "POST",
    body,
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  let data = {};
  try {
    data = await response.json();
  } catch {
    data = {};
  }
  if (response.ok && data.saved) {
    const at = new Date(data.saved_at);
    status.textContent = `Saved at ${at.toLocaleTimeString()}.`;
  } else {
    status.textContent = data.message || "Your answers could not be saved; use the Save button.";
  }
}

function scheduleSave(delay) {
  window.clearTimeout(pending);
  pending = window.setTimeout(() => {
    saving = saving.then(save).catch(() => {
      status.textContent = "Your answers could not be saved; check your connection.";
    });
  }, delay);
}

function renumber(list) {
  const items = [...list.children];
  items.forEach((li, index) => {
    const [up, down] = li.querySelectorAll("button.order-move");
    const qid = list.dataset.question;
    up.value = `${qid}:${index}:up`;
    down.value = `${qid}:${index}:down`;
    up.disabled = index === 0;
    down.disabled = index === items.length - 1;
  });
}

function onMove(event) {
  const button = event.target.closest("button.order-move");
  if (!button) return;
  event.preventDefault();
  const li = button.closest("li");
  const list = li.parentElement;
  const up = button.value.endsWith(":up");
  const sibling = up ? li.previousElementSibling : li.nextElementSibling;
  if (!sibling) return;
  if (up) list.insertBefore(li, sibling);
  else list.insertBefore(sibling, li);
  renumber(list);
  const again = li.querySelector(`button.order-move:nth-of-type(${up ? 1 : 2})`);
  (again.disabled ? li.querySelector("button.order-move:not([disabled])") : again).focus();
  const position = [...list.children].indexOf(li) + 1;
  const live = document.getElementById(`q-${list.dataset.question}-moved`);
  if (live) live.textContent = `${li.querySelector(".quiz-order-text").textContent} is now at position ${position}.`;
  scheduleSave(300);
}

if (form) {
  form.addEventListener("change", () => scheduleSave(300));
  form.addEventListener("input", (event) => {
    if (event.target.matches("input[type=text], textarea")) scheduleSave(1500);
  });
  form.addEventListener("click", onMove);
  form.addEventListener("submit", (event) => {
    // The final Save/Submit posts normally; drop a queued autosave first.
    window.clearTimeout(pending);
    if (event.submitter && event.submitter.classList.contains("order-move")) event.preventDefault();
  });
}
startTimer();

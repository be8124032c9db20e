// optout-guard review desk: plain JavaScript, no external requests.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let cards = [];
let shownId = null; // the card on screen: a refresh that brings the same card leaves it as it is
let lastDecisions = [];  // what U undoes: one decision, or every face a group answer ("A") settled
let busy = false;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

async function api(path, body) {
  // no-store: the answers are never cached, and Chromium makes a second GET of a URL wait (up to
  // 20 s) for one still on its way, so an answer's refresh waited for a slow timed refresh.
  const options = { method: body === undefined ? "GET" : "POST", headers: { "X-CSRFToken": csrf }, cache: "no-store" };
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.error || `${response.status} ${response.statusText}`);
    error.data = data;
    throw error;
  }
  return data;
}

function say(text, error = false) {
  const message = $("message");
  message.textContent = text;
  message.className = error ? "message error" : "message";
}

// ---- review queue -------------------------------------------------------------------------------
const FILTERS = [["q", "filter-q"], ["school", "filter-school"], ["source", "filter-source"], ["folder", "filter-folder"]];

// The audit report links a group of photos to review here as ?source=audit&folder=…: start filtered.
function filtersFromAddress() {
  const given = new URLSearchParams(window.location.search);
  for (const [key, id] of FILTERS) {
    const value = given.get(key);
    if (!value || !$(id)) continue;
    if ($(id).tagName === "SELECT" && ![...$(id).options].some((o) => o.value === value)) $(id).add(new Option(value, value));
    $(id).value = value;
  }
  if ($("filter-folder") && $("filter-folder").value) $("filter-folder-label").hidden = false;
}

function queueFilters() {
  const query = new URLSearchParams();
  for (const [key, id] of FILTERS) {
    const value = $(id) ? $(id).value.trim() : "";
    if (value) query.set(key, value);
  }
  return query.toString() ? `?${query}` : "";
}

let queueAsked = 0; // how many times the queue was asked for: only the latest answer is shown

async function loadQueue() {
  const asked = ++queueAsked;
  const data = await api("/api/queue" + queueFilters());
  // A timed refresh that left before an answer and came back after the answer's own refresh is
  // stale: shown, it brought the answered card back (or said it was "answered elsewhere").
  if (asked !== queueAsked) return;
  // The card on screen stays on screen while it is open, whatever else a refresh or an import
  // brings (the queue's order may change under it); one answered elsewhere is said, not swapped silently.
  const onScreen = data.cards.find((c) => c.id === shownId);
  const wasShown = shownId !== null && shownId !== undefined && !onScreen && !busy;
  cards = onScreen ? [onScreen, ...data.cards.filter((c) => c.id !== shownId)] : data.cards;
  if (wasShown && $("card") && !$("card").hidden) say("The card you had was answered elsewhere; here is the next one.");
  $("open-count").textContent = data.open;
  const same = cards.length && cards[0].id === shownId;
  renderTrail(data.decisions);
  $("reopen-skipped").hidden = !data.skipped;
  $("skipped-count").textContent = data.skipped;
  $("held-back").textContent = data.held_back
    ? `${data.held_back} card(s) wait for photos this desk does not serve now (start it with their --audit or --check-folder).`
    : "";
  const imp = data.importing || {};
  $("importing").textContent = imp.running
    ? `Looking for photos to review in the check folder and the audit: ${imp.done} of ${imp.total} looked at, ${imp.added} face(s) added…`
    : "";
  if (!same) showCard(); // never reset what the reviewer is doing (e.g. R ticked) on a timed refresh
  renderBulk(data.photo_cards || []);
}

// ---- several photo cards at once (issue 27: most cards are photo cards) -------------------------
function renderBulk(waiting) {
  const photos = waiting.filter((c) => c.kind === "photo" && !c.undecodable);
  $("bulk").hidden = photos.length < 2;
  $("bulk-count").textContent = String(photos.length);
  const ticked = new Set([...document.querySelectorAll("#bulk-list input:checked")].map((i) => Number(i.value)));
  const shown = new Set([...document.querySelectorAll("#bulk-list input")].map((i) => Number(i.value)));
  if (photos.length === shown.size && photos.every((c) => shown.has(c.id))) return; // nothing new: keep the ticks
  $("bulk-list").replaceChildren(...photos.map((c) => el("label", { className: "bulk-item" },
    el("img", { src: c.crop_url, alt: `photo ${c.photo_name}`, loading: "lazy" }),
    el("span", {}, el("input", { type: "checkbox", value: String(c.id), checked: ticked.has(c.id) }), ` ${c.photo_name} · ${c.reason}`),
    el("a", { href: c.photo_url, target: "_blank", rel: "noopener", textContent: "open full size" }))));
}

$("bulk-all").addEventListener("change", () => {
  for (const box of document.querySelectorAll("#bulk-list input")) box.checked = $("bulk-all").checked;
});

$("bulk-none").addEventListener("click", async () => {
  const ids = [...document.querySelectorAll("#bulk-list input:checked")].map((i) => Number(i.value));
  if (!ids.length) return say("Tick the photos where no opted-out student is to be seen first.", true);
  if (busy) return stillBusy();
  busy = true;
  try {
    const data = await api("/api/photos/none", { card_ids: ids });
    lastDecisions = data.decisions.slice();
    $("undo").disabled = false;
    say(`Settled ${data.settled} photo cards: no opted-out student in them.`);
    $("bulk-list").replaceChildren();
    $("bulk-all").checked = false;
    await loadQueue();
  } catch (error) { say(error.message, true); } finally { busy = false; }
});

// The queue refreshes itself (a background import adds cards; other reviewers settle them).
setInterval(() => { if (!busy && !document.hidden) loadQueue().catch(() => {}); }, 5000);

function showCard() {
  const card = cards[0];
  $("zoom").hidden = true;  // the next card is not looked at through the last one's photo
  shownId = card ? card.id : null;
  $("card").hidden = !card;
  $("empty").hidden = !!card;
  if (!card) return;
  $("crop").src = card.crop_url;
  $("crop").classList.toggle("whole", card.kind === "photo");
  $("reason").textContent = card.reason;
  const inClip = card.clip_time !== null && card.clip_time !== undefined;
  // A clip the browser can play is shown too, from a second before the person's best frame.
  const video = $("clip");
  video.hidden = !(inClip && card.clip_url);
  if (inClip && card.clip_url) {
    video.src = `${card.clip_url}#t=${Math.max(0, card.clip_time - 1)}`;
  } else {
    video.removeAttribute("src");
  }
  $("card-title").textContent = card.kind === "photo" ? "Photo to settle" : inClip ? "Person in a video clip" : "Face to settle";
  $("question").textContent = card.kind === "photo"
    ? "Does this photo show a student on the opt-out list? (the faces in question are boxed)"
    : "Is it one of these opted-out students?";
  $("none").textContent = card.kind === "photo" ? "No opted-out student here " : "None of them ";
  $("none").append(el("kbd", { textContent: "N" }));
  $("unnamed").textContent = card.kind === "photo" ? "An opted-out student is here " : "An opted-out student, not shown ";
  $("unnamed").append(el("kbd", { textContent: "B" }));
  // Only a whole photo nobody could judge has a blurred copy to post (not a file that cannot be opened).
  $("blurred").hidden = card.kind !== "photo" || !!card.undecodable;
  $("source").textContent = card.kind === "photo"
    ? `${card.photo_name} (${card.source})`
    : `${card.photo_name} (${card.source}) · face ${card.face_px} px wide` + (inClip ? ` · frame at ${clock(card.clip_time)}` : "");
  // A whole photo, or a frame of a clip, is no reference photo.
  document.querySelector(".add-ref").hidden = card.kind === "photo" || inClip;
  // The same child in other photos of this event: answered with this card (each face ticked by default;
  // a face that also resembles a student not shown here cannot be cleared with it, and says so).
  const same = card.same_child || [];
  $("same-child").hidden = !same.length;
  $("same-count").textContent = String(same.length);
  $("same-faces").replaceChildren(...same.map((m) => {
    const box = el("input", { type: "checkbox", checked: true, className: "same-tick", title: "answer this face too" });
    box.dataset.id = String(m.id);
    const caption = el("figcaption", { textContent: `${m.photo_name} · ${m.distance.toFixed(3)}` });
    if (m.others.length) caption.append(el("span", { className: "others", textContent: ` also resembles ${m.others.join(", ")}` }));
    return el("figure", {}, el("label", {}, el("img", { src: m.crop_url, alt: "the same child in another photo" }), box, caption));
  }));
  // A group photo: its other faces that need a person, beside this one; one key settles them all.
  const group = card.group || [];
  $("group").hidden = !group.length;
  $("group-count").textContent = String(group.length);
  $("group-total").textContent = String(group.length + 1);
  $("group-faces").replaceChildren(...group.map((g) => el("figure", {},
    el("img", { src: g.crop_url, alt: "another face of this photo" }),
    el("figcaption", { textContent: `closest: ${g.student_id}` }))));
  $("photo-link").href = card.photo_url;
  $("add-ref").checked = false;
  const list = $("candidates");
  list.replaceChildren();
  card.candidates.forEach((c, i) => {
    const refs = el("div", { className: "refs" }, ...c.references.map((url) => el("img", { src: url, alt: `reference photo of ${c.student_id}` })));
    if (!c.references.length) refs.append(el("span", { textContent: "no reference photo to show" }));
    const label = el("div", { className: "who-cand" },
      el("strong", { textContent: c.name ? `${c.name} (${c.student_id})` : `Student ${c.student_id}` }),
      el("span", { textContent: `distance ${c.distance.toFixed(3)} (smaller = more alike)` }));
    const button = el("button", { className: "candidate", type: "button", title: `This is student ${c.student_id}` },
      el("kbd", { textContent: String(i + 1) }), refs, label);
    button.dataset.student = c.student_id;
    button.addEventListener("click", () => decide("student", c.student_id));
    list.append(el("li", {}, button));
  });
}

function stillBusy() {
  // A key is never ignored silently: while the last answer is being saved, say so.
  say("Still saving your last answer… press the key again in a moment.", true);
}

async function decide(answer, studentId) {
  const card = cards[0];
  if (busy) return stillBusy();
  if (!card) return;
  busy = true;
  try {
    const together = answer === "skip" ? [] : [...document.querySelectorAll("#same-faces .same-tick")]
      .filter((b) => b.checked).map((b) => Number(b.dataset.id));
    const body = { answer, student_id: studentId || null, add_reference: answer === "student" && $("add-ref").checked,
                   same_child: together };
    let data;
    try {
      data = await api(`/api/cards/${card.id}/decide`, body);
    } catch (error) {
      // Clearing a face that would be blocked on its own: the reviewer is asked once more.
      if (!(error.data && error.data.confirm) || !window.confirm(error.data.confirm)) throw error;
      data = await api(`/api/cards/${card.id}/decide`, { ...body, confirm: true });
    }
    if (answer === "skip") say("Skipped: the card is at the back of the queue.");
    else {
      lastDecisions = data.decisions ? data.decisions.slice() : [data.decision];
      $("undo").disabled = false;
      const what = { student: `student ${studentId}`, unnamed: "an opted-out student not shown", ignore: "not a student (ignored)",
                     blurred: "post the blurred copy (the original stays under review)" }[answer] || "none of them";
      const ref = data.reference_added ? "; the face was added as a reference" : "";
      const moved = data.moved_to ? `; the check folder moved it to ${data.moved_to}` : "";
      const also = data.settled > 1 ? ` (and the same child in ${data.settled - 1} other photo(s))` : "";
      say(`Settled as ${what}${also}: the photo is now ${String(data.verdict).toUpperCase()}${ref}${moved}.`);
    }
    await loadQueue();
  } catch (error) {
    say(error.message, true);
  } finally {
    busy = false;
  }
}

async function settleGroup() {
  const card = cards[0];
  if (busy) return stillBusy();
  if (!card || !(card.group || []).length) return;
  busy = true;
  try {
    const path = `/api/photos/${card.sha256}/none`;
    // The cards this page showed: the desk refuses if anything else waits in the photo now.
    const shown = { card_ids: [card.id, ...card.group.map((g) => g.id)] };
    let data;
    try {
      data = await api(path, shown);
    } catch (error) {
      if (!(error.data && error.data.confirm) || !window.confirm(error.data.confirm)) throw error;
      data = await api(path, { ...shown, confirm: true });
    }
    lastDecisions = data.decisions.slice();
    $("undo").disabled = false;
    say(`Settled ${data.settled} faces as none of them: the photo is now ${String(data.verdict).toUpperCase()}.`);
    await loadQueue();
  } catch (error) {
    say(error.message, true);
  } finally {
    busy = false;
  }
}

async function undo() {
  if (busy) return stillBusy();
  if (!lastDecisions.length) return;
  busy = true;
  try {
    let data = {};
    for (const id of lastDecisions) data = await api(`/api/decisions/${id}/undo`, {});
    const moved = data.moved_to ? ` The check folder moved the photo back to ${data.moved_to}.` : "";
    const cards = lastDecisions.length > 1 ? `all ${lastDecisions.length} cards are` : "the card is";
    say(`Undone: ${cards} back in the queue.${moved}`);
    lastDecisions = [];
    $("undo").disabled = true;
    shownId = null;  // the card that came back is shown again, first in the queue
    await loadQueue();
  } catch (error) {
    say(error.message, true);
  } finally {
    busy = false;
  }
}

function renderTrail(decisions) {
  // The decisions named by photo (file name and where it came from); any one can be reopened
  // (the desk refuses on the network for an account that may not undo another's decision).
  const trail = $("trail");
  trail.replaceChildren(...decisions.map((d) => {
    const what = d.action === "student" ? `student ${d.student_id}` : d.action === "none" ? "none of them"
      : d.action.startsWith("ignored") ? "ignored: not a student" : "an opted-out student not shown";
    const photo = d.photo_name ? `${d.photo_name}${d.source ? ` (${d.source})` : ""}` : `photo ${d.sha256.slice(0, 8)}`;
    const item = el("li", { textContent: `${d.at.replace("T", " ").slice(0, 16)} ${d.user}: ${what} — ${photo}` });
    if (d.undone_at) {
      item.className = "undone";
      item.append(el("span", { className: "muted", textContent: ` — undone by ${d.undone_by} ${d.undone_at.replace("T", " ").slice(0, 16)}` }));
    } else {
      const reopen = el("button", { className: "link", textContent: "reopen" });
      reopen.addEventListener("click", async () => {
        try {
          const data = await api(`/api/decisions/${d.id}/undo`, {});
          const moved = data.moved_to ? ` The check folder moved the photo back to ${data.moved_to}.` : "";
          say(`Reopened: the card is back in the queue.${moved}`);
          shownId = null;
          await loadQueue();
        } catch (error) { say(error.message, true); }
      });
      item.append(" ", reopen);
    }
    return item;
  }));
}

// ---- every photo of one student (a family opted out mid-year: what to take down) ----------------
$("student-search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = $("student-id").value.trim();
  if (!id) return;
  const list = $("student-photos");
  try {
    const data = await api(`/api/students/${encodeURIComponent(id)}/photos`);
    const page = el("li", {}, el("a", { href: `/students/${encodeURIComponent(id)}`, textContent: `Open the page of ${id}, with the photos` }));
    list.replaceChildren(...(data.photos.length ? data.photos.map((p) => el("li", {
      textContent: `${(p.when || "").replace("T", " ").slice(0, 16)} · ${p.name} (${p.source}) · ${p.verdict.toUpperCase()} · ${p.how}`,
      title: p.path,
    })) : [el("li", { textContent: `No photo of ${id} is known to have been blocked, held or confirmed.` })]), page);
  } catch (error) { list.replaceChildren(el("li", { textContent: error.message })); }
});

// ---- zoom: the photo at its own size (a 15 px face on a 300 px card cannot be judged) -----------
function zoom(open) {
  const card = cards[0];
  const show = open === undefined ? $("zoom").hidden : open;
  if (show && card) {
    // A photo card shows the marked-up photo; a face card, the whole photo the face is in.
    $("zoom-img").src = card.kind === "photo" ? card.crop_url : card.photo_url;
    $("zoom").hidden = false;
    $("zoom").focus();
  } else {
    $("zoom").hidden = true;
    $("crop").focus();
  }
}
$("crop").addEventListener("click", () => zoom(true));
$("crop").addEventListener("keydown", (event) => { if (event.key === "Enter") { zoom(true); event.preventDefault(); } });
$("zoom").addEventListener("click", () => zoom(false));

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("zoom").hidden) { zoom(false); event.preventDefault(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey || $("queue").hidden) return;
  if (event.key.toLowerCase() === "z" && !(event.target instanceof HTMLInputElement)) { zoom(); event.preventDefault(); return; }
  if (event.target instanceof HTMLInputElement && event.target.type !== "checkbox") return;
  if (event.target instanceof HTMLSelectElement) return;  // typing in a filter never answers a card
  const key = event.key.toLowerCase();
  const card = cards[0];
  if (["1", "2", "3"].includes(key) && card && !card.candidates[Number(key) - 1]) {
    // A key that does nothing says why.
    say(card.kind === "photo"
      ? "This card is about the whole photo: press N (no opted-out student here) or B (an opted-out student is here)."
      : `There is no student ${key} on this card.`, true);
  } else if (["1", "2", "3"].includes(key) && card) decide("student", card.candidates[Number(key) - 1].student_id);
  else if (key === "n" && card) decide("none");
  else if (key === "i" && card && card.kind !== "photo") decide("ignore");
  else if (key === "i" && card) say("I is for one face that is not a student (a poster, a painting, an adult).", true);
  else if (key === "b" && card) decide("unnamed");
  else if (key === "p" && card && card.kind === "photo") decide("blurred");
  else if (key === "p" && card) say("P is for a whole photo's card: the blurred copy of a photo nobody could judge.", true);
  else if (key === "s" && card) decide("skip");
  else if (key === "r" && card && card.kind === "photo") say("A whole photo cannot be a reference photo.", true);
  else if (key === "r" && card) $("add-ref").checked = !$("add-ref").checked;
  else if (key === "u") undo();
  else if (key === "a" && card && (card.group || []).length) settleGroup();
  else if (key === "a" && card) say("Only this face of the photo waits for a person: press N for none of them.", true);
  else return;
  event.preventDefault();
});
$("none").addEventListener("click", () => decide("none"));
$("unnamed").addEventListener("click", () => decide("unnamed"));
$("blurred").addEventListener("click", () => decide("blurred"));
$("skip").addEventListener("click", () => decide("skip"));
$("undo").addEventListener("click", undo);
$("refresh").addEventListener("click", async () => {
  say("Looking for new photos in the check folder and the audit…");
  try {
    const data = await api("/api/refresh", {});
    say(data.started ? "Looking for new photos to review…" : "Already looking for new photos…");
    await loadQueue();
  } catch (error) { say(error.message, true); }
});

function clock(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// ---- check photos ------------------------------------------------------------------------------
async function loadScopes() {
  try {
    const data = await api("/api/scopes");
    for (const name of data.scopes) {
      $("scope").append(el("option", { value: name, textContent: name }));
      if (![...$("filter-school").options].some((o) => o.value === name)) {
        $("filter-school").append(el("option", { value: name, textContent: name }));
      }
    }
  } catch (error) { /* the picker stays "the whole district" */ }
}
loadScopes();
for (const id of ["filter-q", "filter-school", "filter-source", "filter-folder"]) {
  $(id).addEventListener("change", () => loadQueue().catch((error) => say(error.message, true)));
}
$("filters").addEventListener("submit", (event) => { event.preventDefault(); loadQueue().catch((error) => say(error.message, true)); });

async function checkFiles(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("photos", file);
  form.append("scope", $("scope").value);
  const results = $("results");
  const waiting = el("p", { className: "message", textContent: `Checking ${files.length} photo(s)…` });
  results.prepend(waiting);
  try {
    const data = await api("/api/check", form);
    waiting.remove();
    for (const r of data.results.reverse()) results.prepend(renderResult(r));
    await loadQueue();
  } catch (error) {
    waiting.textContent = error.message;
    waiting.className = "message error";
  }
}

function renderResult(r) {
  const picture = r.marked_url ? el("img", { src: r.marked_url, alt: `marked-up copy of ${r.name}` }) : el("p", { textContent: "no marked-up copy" });
  const faces = el("ul", { className: "faces" }, ...r.faces.map((f, i) => {
    const who = f.candidates.length ? ` — closest: ${f.candidates.map((c) => `${c.name ? `${c.name} (${c.student_id})` : c.student_id} (${c.distance.toFixed(3)})`).join(", ")}` : "";
    return el("li", { textContent: `Face ${i + 1}: ${f.decision}${f.reason ? ": " + f.reason : ""}${who}` });
  }));
  const info = el("div", {},
    el("h2", { textContent: r.name }),
    el("span", { className: `verdict ${r.verdict}`, textContent: r.verdict }),
    el("p", { className: "muted", textContent: `Checked against: ${r.scope}` }),
    el("ul", {}, ...r.reasons.map((reason) => el("li", { textContent: reason }))),
    faces);
  if (r.faces.some((f) => f.card)) info.append(el("p", { textContent: "Faces that need a person are waiting in the review queue." }));
  const downloads = [];
  if (r.marked_url) downloads.push(el("a", { href: r.marked_url, download: `marked-${r.name}.jpg`, textContent: "Download the marked-up copy" }));
  if (r.postable_url) downloads.push(el("a", { href: r.postable_url, textContent: "Download the copy fit to post (faces in question blurred, no metadata)" }));
  if (downloads.length) info.append(el("p", { className: "downloads" }, ...downloads.flatMap((a, i) => (i ? [" · ", a] : [a]))));
  const box = el("article", { className: "result" }, picture, info);
  box.dataset.verdict = r.verdict;
  return box;
}

const drop = $("drop");
$("files").addEventListener("change", (event) => { checkFiles([...event.target.files]); event.target.value = ""; });
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
// The drop area is a button for the keyboard too: Enter or Space opens the file chooser.
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("files").click(); }
});
drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); checkFiles([...event.dataTransfer.files]); });

$("group-none").addEventListener("click", settleGroup);
$("reopen-skipped").addEventListener("click", async () => {
  try {
    const data = await api("/api/skipped/reopen", {});
    say(`${data.reopened} skipped card(s) are back in the queue.`);
    shownId = null;
    await loadQueue();
  } catch (error) { say(error.message, true); }
});

// ---- a mid-year opt-out (shown only to accounts that may add a student) ----------------------------
$("add-student")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("add-result");
  out.textContent = "Adding…";
  try {
    const data = await api("/api/students", new FormData(event.target));
    out.textContent = data.protected
      ? `Student ${data.student_id} is protected now (${data.reference_photos} reference photo(s)).`
      : `Student ${data.student_id} is NOT protected: ${data.rejected.join("; ") || "no photo could be used"}.`;
    if (data.protected) event.target.reset();
  } catch (error) { out.textContent = error.message; }
});

// ---- status ------------------------------------------------------------------------------------
function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

const JOB_NAMES = { audit: "Audit of", watch: "Check folder watcher of", sync: "Sync of", "desk import": "Import from" };

function jobLine(j, line) {
  const name = `${JOB_NAMES[j.kind] || j.kind} ${j.target}`;
  const sum = j.summary || {};
  const counts = j.kind === "audit" && "checked" in sum
    ? `${sum.checked} checked: ${sum.block || 0} blocked, ${sum.review || 0} to review, ${sum.allow || 0} allowed`
    : Object.entries(sum).filter(([k]) => k !== "error").map(([k, v]) => `${k.replaceAll("_", " ")} ${v}`).join(", ");
  if (j.state === "running") {
    const far = j.total ? `${j.done} of ${j.total} done` : `${j.done} done`;
    return line(true, `${name}: running since ${when(j.started)}, ${far} (last heard from ${when(j.updated)}).`);
  }
  if (j.state === "finished") return line(true, `${name}: last run finished ${when(j.finished)}${counts ? ` (${counts})` : ""}.`);
  if (j.state === "failed") return line(false, `${name}: last run FAILED ${when(j.finished)}: ${(j.summary || {}).error || "see the log"}.`);
  return line(false, `${name}: last run STOPPED without finishing (started ${when(j.started)}, last heard from ${when(j.updated)}; ` +
    `its process is gone): run it again.`);
}

async function loadStatus() {
  const list = $("status-list");
  const line = (ok, text) => el("li", { className: ok ? "ok" : "bad", textContent: (ok ? "✓ " : "✗ ") + text });
  try {
    const s = await api("/api/status");
    const items = [];
    items.push(s.index.readable
      ? line(true, `Face index readable: ${s.index.students} students protected` + (s.index.not_protected ? `, ${s.index.not_protected} NOT protected` : "") + ".")
      : line(false, `Face index cannot be read: ${s.index.problem}`));
    items.push(line(Boolean(s.opt_out_list.synced), s.opt_out_list.synced
      ? `Opt-out list last synced ${when(s.opt_out_list.synced)} (${s.opt_out_list.students} students).` : "No opt-out list synced yet."));
    for (const f of s.check_folders) {
      const waiting = f.waiting ? ` ${f.waiting} file(s) waiting in the inbox since ${when(f.oldest_waiting_since)}.` : " Inbox empty.";
      const stopped = f.stopped_because ? ` It stopped: ${f.stopped_because}` : "";
      items.push(line(f.watcher_running && !f.stopped_because,
        `Check folder ${f.folder}: watcher ${f.watcher_running ? "running" : "NOT running"}; last photo filed ${when(f.last_filed)}.${waiting}${stopped}`));
    }
    for (const a of s.audits) {
      const totals = a.totals ? ` — ${a.totals.block || 0} blocked, ${a.totals.review || 0} to review, ${a.totals.allow || 0} allowed` : "";
      items.push(line(Boolean(a.last_finished), `Audit of ${a.library}: last finished ${when(a.last_finished)}${totals}.`));
    }
    if (!s.check_folders.length && !s.audits.length) items.push(line(true, "No check folder or audit given to this desk (serve --check-folder, --audit)."));
    const listed = new Set(s.audits.map((a) => a.library));
    for (const j of s.jobs || []) {
      if (j.kind === "audit" && j.state === "finished" && listed.has(j.target)) continue;  // said above
      items.push(jobLine(j, line));
    }
    list.replaceChildren(...items);
  } catch (error) { list.replaceChildren(line(false, error.message)); }
}

async function loadRecognised() {
  const list = $("recognised-list");
  try {
    const data = await api("/api/recognised");
    if (!data.faces.length) { list.replaceChildren(el("li", { textContent: "None." })); return; }
    list.replaceChildren(...data.faces.map((f) => {
      const hold = el("button", { type: "button", textContent: "Hold for a person" });
      const resembled = f.resembles.map((c) => `${c.student_id} (${c.distance})`).join(", ");
      const item = el("li", { className: "recognised" },
        el("img", { src: f.crop_url, alt: "the face", width: 96, height: 96 }),
        el("span", { textContent: `${f.photo_name} (${f.source}): ${f.reason}. Resembled: ${resembled}. ` },
          el("a", { href: f.photo_url, target: "_blank", rel: "noopener", textContent: "open the photo" })),
        hold);
      hold.addEventListener("click", async () => {
        hold.disabled = true;
        try {
          const r = await api(`/api/recognised/${f.id}/hold`, {});
          item.replaceChildren(el("span", { textContent: `Held: it is in the queue now${r.moved_to ? ` (moved to ${r.moved_to})` : ""}.` }));
          loadQueue().catch(() => {});
        } catch (error) { hold.disabled = false; say(error.message, true); }
      });
      return item;
    }));
  } catch (error) { list.replaceChildren(el("li", { className: "bad", textContent: error.message })); }
}

// ---- tabs ------------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
    $("queue").hidden = tab.dataset.tab !== "queue";
    $("check").hidden = tab.dataset.tab !== "check";
    $("status").hidden = tab.dataset.tab !== "status";
    if (tab.dataset.tab === "status") { loadStatus(); loadRecognised(); }
  });
}

filtersFromAddress();
loadQueue().catch((error) => say(error.message, true));

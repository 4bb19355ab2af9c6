// The playground's page: renders the emulated Slack workspace from the Block Kit JSON the bot sent, generically,
// and turns every click, change and submit into an act the server delivers to the bot through the Slack driver.
// Every string from the server is set with textContent (never innerHTML): file names and command output stay text.
"use strict";

const $ = (id) => document.getElementById(id);
const session = {
  user: localStorage.getItem("pg.user") || "U0001",
  place: localStorage.getItem("pg.place") || "C0001", // a conversation id, or "home"
  state: null,
  shown: { feed: "", home: "", modal: "", machine: "" },
  stream: null,
};
let queue = Promise.resolve(); // acts are sent one after another, in the order the person made them
let uid = 0;

// ---- small DOM helpers -----------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// replaceChildren without the nulls of conditional children (it would show them as the text "null")
function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function safeId(...parts) {
  return parts.map((p) => String(p).replace(/[^A-Za-z0-9_-]/g, "_")).join("--");
}

function plain(textObject) {
  if (!textObject) return "";
  if (typeof textObject === "string") return textObject;
  return textObject.type === "mrkdwn" ? decode(stripMarks(textObject.text || "")) : textObject.text || "";
}

function decode(text) {
  return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function stripMarks(text) {
  return text.replace(/<([^>|]+)\|([^>]+)>/g, "$2").replace(/[*_~`]/g, "");
}

// ---- mrkdwn ----------------------------------------------------------------------------------------------------

const EMOJI = {
  white_check_mark: "✅", x: "❌", warning: "⚠️", hourglass_flowing_sand: "⏳", hourglass: "⌛", key: "🔑",
  lock: "🔒", rotating_light: "🚨", information_source: "ℹ️", floppy_disk: "💾", calendar: "📅", clock3: "🕒",
  heavy_check_mark: "✔️", no_entry: "⛔", arrows_counterclockwise: "🔄", package: "📦", file_folder: "📁",
  card_index_dividers: "🗂️", tada: "🎉", thumbsup: "👍", red_circle: "🔴", large_green_circle: "🟢",
  large_yellow_circle: "🟡", pause_button: "⏸️", arrow_forward: "▶️", bust_in_silhouette: "👤", wrench: "🔧",
  mag: "🔍", computer: "💻", gear: "⚙️", zzz: "💤", bell: "🔔", repeat: "🔁", stopwatch: "⏱️",
};

function mrkdwn(text) {
  const fragment = document.createDocumentFragment();
  const parts = String(text).split("```");
  parts.forEach((part, index) => {
    if (index % 2 === 1) fragment.append(el("pre", { text: decode(part.replace(/^\n/, "")) }));
    else lines(part, fragment);
  });
  return fragment;
}

function lines(text, into) {
  text.split("\n").forEach((line, index) => {
    if (index > 0) into.append(el("br"));
    if (line.startsWith("&gt; ") || line.startsWith("> ")) {
      const quote = el("span", { class: "quote" });
      inline(line.replace(/^(&gt;|>) /, ""), quote);
      into.append(quote);
    } else inline(line, into);
  });
}

const TOKEN = /(`[^`]+`)|(<[^<>]+>)|(\*[^*\n]+\*)|(_[^_\n]+_)|(~[^~\n]+~)|(:[a-z0-9_+-]+:)/g;

function inline(text, into) {
  let last = 0;
  for (const match of text.matchAll(TOKEN)) {
    if (match.index > last) into.append(decode(text.slice(last, match.index)));
    into.append(token(match[0]));
    last = match.index + match[0].length;
  }
  if (last < text.length) into.append(decode(text.slice(last)));
}

function token(raw) {
  const inner = raw.slice(1, -1);
  if (raw[0] === "`") return el("code", { text: decode(inner) });
  if (raw[0] === ":") return EMOJI[inner] ? el("span", { role: "img", "aria-label": inner, text: EMOJI[inner] }) : raw;
  if (raw[0] === "<") return entity(inner);
  const tag = { "*": "strong", _: "em", "~": "s" }[raw[0]];
  const node = el(tag);
  inline(inner, node);
  return node;
}

function entity(inner) {
  const [target, label] = inner.split("|", 2);
  const names = session.state ? session.state.names : { users: {}, channels: {} };
  if (target.startsWith("@")) return el("span", { class: "mention", text: "@" + (names.users[target.slice(1)] || label || target.slice(1)) });
  if (target.startsWith("#")) return el("span", { class: "mention", text: "#" + (label || names.channels[target.slice(1)] || target.slice(1)) });
  if (target.startsWith("!subteam^")) return el("span", { class: "mention", text: label || "@group" });
  if (target.startsWith("!date^")) return decode(label || "");
  if (target.startsWith("!")) return el("span", { class: "mention", text: "@" + target.slice(1) });
  if (/^(https?:|mailto:)/i.test(target)) {
    return el("a", { href: decode(target), target: "_blank", rel: "noopener noreferrer", text: decode(label || target) });
  }
  return decode("<" + inner + ">");
}

function textNode(textObject, tag = "span") {
  const node = el(tag);
  if (!textObject) return node;
  if (textObject.type === "mrkdwn") node.append(mrkdwn(textObject.text || ""));
  else node.textContent = textObject.text || "";
  return node;
}

// ---- acts --------------------------------------------------------------------------------------------------------

function act(name, body) {
  const run = async () => {
    const response = await fetch("/api/" + name, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Playground": "1" },
      body: JSON.stringify({ user: session.user, ...body }),
    });
    let answer = {};
    try { answer = await response.json(); } catch (_) { answer = { ok: response.ok, error: response.statusText }; }
    if (!answer.ok && answer.error) problem(answer.error, answer.fields || []);
    else problem(null);
    return answer;
  };
  queue = queue.then(run, run);
  return queue;
}

function problem(text, fields = []) {
  const box = $("problem");
  box.hidden = !text;
  box.textContent = text ? (fields.length ? text + ": " + fields.join(", ") : text) : "";
  for (const block of fields) {
    const error = document.getElementById(safeId("err", block));
    if (error) { error.textContent = "Please fill out this field."; error.hidden = false; }
  }
}

function withConfirm(confirm, go) {
  if (!confirm) return go();
  const layer = $("confirm");
  const title = "confirm-title";
  const close = () => layer.replaceChildren();
  const dialog = el("div", { role: "alertdialog", "aria-modal": "true", "aria-labelledby": title, class: "dialog small" },
    el("h2", { id: title, text: plain(confirm.title) || "Are you sure?" }),
    textNode(confirm.text, "p"),
    el("div", { class: "dialog-buttons" },
      el("button", { type: "button", text: plain(confirm.deny) || "Cancel", onclick: close }),
      el("button", { type: "button", class: confirm.style === "danger" ? "danger" : "primary",
        text: plain(confirm.confirm) || "Yes", onclick: () => { close(); go(); } })));
  layer.replaceChildren(el("div", { class: "backdrop" }, dialog));
  dialog.querySelector("button.primary, button.danger").focus();
}

// ---- Block Kit ---------------------------------------------------------------------------------------------------

// ctx: { surface: "modal"|"home"|"message", view, channel, ts }
function blocks(list, ctx) {
  const out = el("div", { class: "blocks" });
  for (const block of list || []) {
    const node = block_(block, ctx);
    if (node) out.append(node);
  }
  return out;
}

function block_(block, ctx) {
  switch (block.type) {
    case "header": return el(ctx.surface === "message" ? "h3" : "h2", { class: "b-header", text: plain(block.text) });
    case "divider": return el("hr", { class: "b-divider" });
    case "section": return section(block, ctx);
    case "context": return el("div", { class: "b-context" }, (block.elements || []).map((e) =>
      e.type === "image" ? image(e) : textNode(e)));
    case "actions": return el("div", { class: "b-actions", role: "group", "aria-label": "Actions" },
      (block.elements || []).map((e) => element(e, block, ctx, null)));
    case "input": return input(block, ctx);
    case "image": return el("figure", { class: "b-image" }, image(block), block.title ? textNode(block.title, "figcaption") : null);
    case "rich_text": return el("div", { class: "b-rich", text: richText(block) });
    default: return el("p", { class: "b-unknown", text: `(a ${block.type} block)` });
  }
}

function richText(block) {
  const walk = (node) => (node.text || "") + (node.elements || []).map(walk).join("");
  return walk(block);
}

function image(e) {
  const url = String(e.image_url || "");
  return /^https?:/i.test(url) ? el("img", { src: url, alt: e.alt_text || "", class: "b-img" })
    : el("span", { text: e.alt_text || "" });
}

function section(block, ctx) {
  const node = el("div", { class: "b-section" });
  const body = el("div", { class: "b-section-body" });
  if (block.text) body.append(textNode(block.text, "div"));
  if (block.fields) body.append(el("div", { class: "b-fields" }, block.fields.map((f) => textNode(f, "div"))));
  node.append(body);
  if (block.accessory) {
    const label = block.text ? plain(block.text).slice(0, 80) : "Option";
    node.append(el("div", { class: "b-accessory" }, element(block.accessory, block, ctx, label)));
  }
  return node;
}

function stateOf(ctx, block, e) {
  const values = ctx.view && ctx.view.state ? ctx.view.state.values : {};
  return ((values[block.block_id] || {})[e.action_id]) || null;
}

function input(block, ctx) {
  const e = block.element || {};
  const id = safeId("f", block.block_id, e.action_id);
  const errorId = safeId("err", block.block_id);
  const error = (ctx.view && ctx.view.errors || {})[block.block_id];
  const labelId = id + "--label";
  const label = el("p", { class: "label-row" }, el("label", { for: id, id: labelId, class: "b-label", text: plain(block.label) }),
    block.optional ? el("span", { class: "optional", text: " (optional)" }) : null);
  const control = element(e, block, ctx, plain(block.label), { id, labelId, errorId, invalid: !!error });
  const hint = block.hint ? textNode(block.hint, "p") : null;
  if (hint) { hint.id = id + "--hint"; hint.className = "hint"; }
  return el("div", { class: "b-input" + (error ? " invalid" : "") }, label, control, hint,
    el("p", { id: errorId, class: "error", text: error || "", hidden: !error }));
}

// One interactive element. `field` is set inside input blocks (ids for labelling and errors).
function element(e, block, ctx, label, field = null) {
  const inInput = block.type === "input";
  const state = stateOf(ctx, block, e);
  const dispatch = !inInput || block.dispatch_action;
  const send = (value) => {
    const at = { surface: ctx.surface, block_id: block.block_id, action_id: e.action_id, value, channel: ctx.channel, ts: ctx.ts };
    if (ctx.surface === "message") return act("click", at);
    return act("set", at); // the driver sends block_actions for elements outside input blocks, as Slack does
  };
  const described = field ? [field.errorId, field.id + "--hint"].join(" ") : null;
  const common = field ? { id: field.id, "aria-describedby": described, "aria-invalid": field.invalid ? "true" : null } : {};
  switch (e.type) {
    case "button": return button(e, block, ctx);
    case "overflow": return overflow(e, block, ctx);
    case "plain_text_input": case "email_text_input": case "url_text_input": case "number_input": {
      const type = { email_text_input: "email", url_text_input: "url", number_input: "text" }[e.type] || "text";
      const value = state ? state.value : e.initial_value;
      const attrs = { ...common, placeholder: plain(e.placeholder) || null, "data-kind": "text",
        "data-block": block.block_id, "data-action": e.action_id, "aria-label": field ? null : label,
        inputmode: e.type === "number_input" ? "decimal" : null };
      const node = e.multiline ? el("textarea", { ...attrs, rows: 4 }) : el("input", { ...attrs, type });
      node.value = value || "";
      node.addEventListener("change", () => { if (dispatch) send(node.value || null); else send(node.value || null); });
      return node;
    }
    case "static_select": case "conversations_select": case "channels_select": case "users_select":
      return select(e, block, common, label, field, state, send, false);
    case "multi_static_select": case "multi_conversations_select": case "multi_channels_select": case "multi_users_select":
      return select(e, block, common, label, field, state, send, true);
    case "external_select": case "multi_external_select": return external(e, block, ctx, common, label, field, state, send);
    case "radio_buttons": case "checkboxes": return choices(e, block, field, label, state, send);
    case "timepicker": case "datepicker": {
      const key = e.type === "timepicker" ? "selected_time" : "selected_date";
      const node = el("input", { ...common, type: e.type === "timepicker" ? "time" : "date", "aria-label": field ? null : label,
        "data-kind": "scalar", "data-block": block.block_id, "data-action": e.action_id });
      node.value = (state ? state[key] : e[e.type === "timepicker" ? "initial_time" : "initial_date"]) || "";
      node.addEventListener("change", () => send(node.value || null));
      return node;
    }
    default: return el("span", { class: "b-unknown", text: `(a ${e.type} element)` });
  }
}

function button(e, block, ctx) {
  const style = e.style === "primary" ? "primary" : e.style === "danger" ? "danger" : null;
  if (e.url && /^https?:/i.test(e.url)) {
    return el("a", { href: e.url, target: "_blank", rel: "noopener noreferrer", class: "button " + (style || ""), text: plain(e.text) });
  }
  return el("button", { type: "button", class: style, text: plain(e.text), onclick: () => withConfirm(e.confirm, () =>
    act("click", { surface: ctx.surface, block_id: block.block_id, action_id: e.action_id, value: e.value ?? null,
      channel: ctx.channel, ts: ctx.ts })) });
}

function overflow(e, block, ctx) {
  const node = el("select", { "aria-label": "More actions", class: "overflow" },
    el("option", { value: "", text: "More actions…" }),
    (e.options || []).map((o) => el("option", { value: o.value, text: plain(o.text) })));
  node.addEventListener("change", () => {
    const value = node.value;
    node.value = "";
    if (value) withConfirm(e.confirm, () => act("click", { surface: ctx.surface, block_id: block.block_id,
      action_id: e.action_id, value, channel: ctx.channel, ts: ctx.ts }));
  });
  return node;
}

function optionsOf(e) {
  if (e.type.includes("conversations") || e.type.includes("channels")) {
    return (session.state.conversations || []).filter((c) => !c.is_im).map((c) => ({ value: c.id, label: c.label }));
  }
  if (e.type.includes("users")) {
    return Object.entries(session.state.names.users).map(([id, name]) => ({ value: id, label: name }));
  }
  const flat = [];
  for (const o of e.options || []) flat.push({ value: o.value, label: plain(o.text) });
  for (const g of e.option_groups || []) for (const o of g.options || []) flat.push({ value: o.value, label: plain(o.text), group: plain(g.label) });
  return flat;
}

function selectedValues(e, state) {
  if (state) {
    const v = state.selected_option || state.selected_options || state.selected_conversation || state.selected_conversations
      || state.selected_channel || state.selected_channels || state.selected_user || state.selected_users;
    if (!v) return [];
    return (Array.isArray(v) ? v : [v]).map((x) => (typeof x === "string" ? x : x.value));
  }
  const initial = e.initial_option || e.initial_options || e.initial_conversation || e.initial_conversations
    || e.initial_channel || e.initial_channels || e.initial_user || e.initial_users;
  if (!initial) return [];
  return (Array.isArray(initial) ? initial : [initial]).map((x) => (typeof x === "string" ? x : x.value));
}

function select(e, block, common, label, field, state, send, multiple) {
  const chosen = new Set(selectedValues(e, state));
  const node = el("select", { ...common, multiple, "aria-label": field ? null : label, "data-kind": multiple ? "multi" : "scalar",
    "data-block": block.block_id, "data-action": e.action_id });
  if (!multiple) node.append(el("option", { value: "", text: plain(e.placeholder) || "Choose…" }));
  const groups = {};
  for (const o of optionsOf(e)) {
    const option = el("option", { value: o.value, text: o.label, selected: chosen.has(o.value) });
    if (o.group) {
      groups[o.group] = groups[o.group] || node.appendChild(el("optgroup", { label: o.group }));
      groups[o.group].append(option);
    } else node.append(option);
  }
  node.addEventListener("change", () => send(multiple ? [...node.selectedOptions].map((o) => o.value) : node.value || null));
  return node;
}

function external(e, block, ctx, common, label, field, state, send) {
  const multiple = e.type === "multi_external_select";
  const known = new Map();
  const current = state ? (state.selected_option ? [state.selected_option] : state.selected_options || [])
    : (e.initial_option ? [e.initial_option] : e.initial_options || []);
  const node = el("select", { ...common, multiple, "aria-label": field ? null : label, "data-kind": "external",
    "data-block": block.block_id, "data-action": e.action_id });
  const fill = (options, keep) => {
    node.replaceChildren();
    if (!multiple) node.append(el("option", { value: "", text: options.length ? "Choose…" : "Type to search" }));
    for (const o of [...keep, ...options.filter((o) => !keep.some((k) => k.value === o.value))]) {
      known.set(o.value, o);
      node.append(el("option", { value: o.value, text: plain(o.text), selected: keep.some((k) => k.value === o.value) }));
    }
  };
  fill([], current);
  node.optionObjects = () => [...node.selectedOptions].filter((o) => o.value).map((o) => known.get(o.value));
  const search = el("input", { type: "search", "aria-label": "Search " + label, placeholder: plain(e.placeholder) || "Type to search",
    autocomplete: "off" });
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const answer = await act("options", { surface: ctx.surface, block_id: block.block_id, action_id: e.action_id,
        query: search.value });
      if (answer.ok) fill(answer.options || [], node.optionObjects());
    }, 200);
  });
  node.addEventListener("change", () => {
    const picked = node.optionObjects();
    send(multiple ? picked : picked[0] || null);
  });
  return el("div", { class: "external" }, search, node);
}

function choices(e, block, field, label, state, send) {
  const radio = e.type === "radio_buttons";
  const chosen = new Set(selectedValues(e, state));
  const name = safeId("c", block.block_id, e.action_id, ++uid);
  const group = el("div", { role: radio ? "radiogroup" : "group", id: field ? field.id : null,
    "aria-labelledby": field ? field.labelId : null, "aria-label": field ? null : label,
    "aria-describedby": field ? field.errorId : null, "aria-invalid": field && field.invalid ? "true" : null,
    class: "choices", "data-kind": radio ? "radio" : "checks", "data-block": block.block_id, "data-action": e.action_id });
  (e.options || []).forEach((o, i) => {
    const id = name + "-" + i;
    const box = el("input", { type: radio ? "radio" : "checkbox", id, name, value: o.value, checked: chosen.has(o.value) });
    box.addEventListener("change", () => send(current(group)));
    group.append(el("div", { class: "choice" }, box, el("label", { for: id }, textNode(o.text),
      o.description ? el("span", { class: "hint" }, " — ", textNode(o.description)) : null)));
  });
  return group;
}

function current(control) {
  const kind = control.dataset.kind;
  if (kind === "text" || kind === "scalar") return control.value || null;
  if (kind === "multi") return [...control.selectedOptions].map((o) => o.value);
  if (kind === "external") { const picked = control.optionObjects(); return control.multiple ? picked : picked[0] || null; }
  if (kind === "radio") { const on = control.querySelector("input:checked"); return on ? on.value : null; }
  if (kind === "checks") return [...control.querySelectorAll("input:checked")].map((b) => b.value);
  return null;
}

// ---- surfaces ----------------------------------------------------------------------------------------------------

function renderModal(stack) {
  const layer = $("modals");
  const top = stack.length ? stack[stack.length - 1] : null;
  const key = top ? JSON.stringify([top.id, top.hash, top.errors, session.user]) : "";
  if (key === session.shown.modal) return;
  const focused = document.activeElement && layer.contains(document.activeElement) ? document.activeElement.id : null;
  session.shown.modal = key;
  if (!top) { layer.replaceChildren(); return; }
  const titleId = safeId("title", top.id);
  const form = el("form", { class: "dialog-form", novalidate: true });
  form.append(blocks(top.blocks, { surface: "modal", view: top }));
  const buttons = el("div", { class: "dialog-buttons" },
    el("button", { type: "button", text: plain(top.close) || "Cancel", onclick: () => act("close", {}) }),
    top.submit ? el("button", { type: "submit", class: "primary", text: plain(top.submit) }) : null);
  form.append(buttons);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = [...form.querySelectorAll("[data-block]")].filter((c) => c.closest(".b-input"))
      .map((c) => ({ block_id: c.dataset.block, action_id: c.dataset.action, value: current(c) }));
    act("submit", { values });
  });
  const depth = stack.length > 1 ? el("p", { class: "depth", text: `View ${stack.length} of ${stack.length}` }) : null;
  const dialog = el("div", { role: "dialog", "aria-modal": "true", "aria-labelledby": titleId, class: "dialog" },
    el("h2", { id: titleId, class: "dialog-title", text: plain(top.title) }), depth, form);
  layer.replaceChildren(el("div", { class: "backdrop" }, dialog));
  const again = focused && document.getElementById(focused);
  (again || dialog.querySelector("input, select, textarea, button")).focus({ preventScroll: true });
}

function renderMessages(list, channel) {
  const key = JSON.stringify([channel, list, session.user]);
  if (key === session.shown.feed) return;
  session.shown.feed = key;
  const feed = $("feed");
  const nearBottom = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 80;
  const parents = list.filter((m) => !m.thread_ts || m.thread_ts === m.ts);
  const replies = list.filter((m) => m.thread_ts && m.thread_ts !== m.ts);
  feed.replaceChildren(...parents.map((m) => {
    const node = message(m, channel);
    const thread = replies.filter((r) => r.thread_ts === m.ts);
    if (thread.length) {
      node.append(el("section", { class: "thread", "aria-label": `Thread: ${thread.length} ${thread.length === 1 ? "reply" : "replies"}` },
        thread.map((r) => message(r, channel))));
    }
    return node;
  }));
  if (!parents.length) feed.append(el("p", { class: "empty", text: "No messages yet. Type /backup new below." }));
  if (nearBottom) feed.scrollTop = feed.scrollHeight;
}

function message(m, channel) {
  const names = session.state.names.users;
  const who = m.bot_id ? "Backup Wizard" : names[m.user] || m.user || "someone";
  const when = new Date(parseFloat(m.ts) * 1000).toLocaleTimeString();
  const meta = el("p", { class: "meta" }, el("strong", { text: who }), " ", el("time", { text: when }),
    m.edited ? el("span", { class: "edited", text: " (edited)" }) : null,
    m.ephemeral ? el("span", { class: "ephemeral", text: " Only visible to you" }) : null);
  const body = m.blocks && m.blocks.length ? blocks(m.blocks, { surface: "message", channel, ts: m.ts })
    : el("div", {}, mrkdwn(m.text || ""));
  const attachments = (m.attachments || []).map((a) => el("div", { class: "attachment" },
    a.blocks ? blocks(a.blocks, { surface: "message", channel, ts: m.ts }) : el("div", {}, mrkdwn(a.text || a.fallback || ""))));
  return el("article", { class: "message" + (m.ephemeral ? " is-ephemeral" : ""), "aria-label": `${who} at ${when}` },
    meta, body, attachments);
}

function renderHome(view) {
  const key = JSON.stringify([view && view.id, view && view.hash, session.user]);
  if (key === session.shown.home) return;
  session.shown.home = key;
  $("home").replaceChildren(view ? blocks(view.blocks, { surface: "home", view })
    : el("p", { class: "empty", text: "Opening the Home tab…" }));
}

function renderMachine(info) {
  const key = JSON.stringify(info);
  if (key === session.shown.machine) return;
  session.shown.machine = key;
  const box = $("machine");
  if (!info || !info.server) { box.replaceChildren(); return; }
  if (info.accepted) {
    put(box, el("p", {},
      `This machine is the server “${info.server}” (${info.address}: an SSH server of the playground, on loopback only, `
      + `that accepts the bot's key) and “${info.pool}” is a storage pool in ${info.pool_dir}. `
      + "Back up any folder of this machine with /backup new; real servers are added the same way as in Slack."),
      info.problem ? el("p", { class: "error", text: info.problem }) : null);
    return;
  }
  put(box,
    el("p", {}, "Try it on this machine: the playground can run an SSH server on 127.0.0.1 that accepts only the bot's key "
      + `(logins as this machine's user, its home kept in the data directory), add it as the server “${info.server}”, `
      + `and a storage pool in ${info.pool_dir}. The plain member gets operator rights on both, and their chains `
      + "need the approver's approval."),
    el("button", { type: "button", class: "primary", text: "Set up this machine", onclick: () => act("machine", {}) }),
    info.problem ? el("p", { class: "error", text: info.problem }) : null);
}

function render() {
  const s = session.state;
  if (!s) return;
  const who = $("who");
  if (who.options.length !== s.people.length) {
    who.replaceChildren(...s.people.map((p) => el("option", { value: p.id, text: `${p.real_name} (${p.role})` })));
  }
  who.value = session.user;
  const dm = s.conversations.find((c) => c.is_im);
  const channels = s.conversations.filter((c) => !c.is_im);
  $("channels").replaceChildren(...channels.map((c) => el("li", {}, el("button", { type: "button", class: "side-item",
    "aria-current": session.place === c.id ? "page" : null, text: c.label, onclick: () => go(c.id) }))));
  $("go-home").setAttribute("aria-current", session.place === "home" ? "page" : "false");
  $("go-dm").setAttribute("aria-current", session.place === "dm" ? "page" : "false");
  renderMachine(s.machine);
  const inHome = session.place === "home";
  $("home").hidden = !inHome;
  $("feed").hidden = inHome;
  $("composer").hidden = inHome;
  let channel = session.place;
  if (session.place === "dm") channel = dm ? dm.id : null;
  if (!inHome && session.place !== "dm" && !channels.some((c) => c.id === channel)) channel = session.place = channels.length ? channels[0].id : null;
  const label = inHome ? "Backup Wizard: Home" : session.place === "dm" ? "Backup Wizard (direct messages)"
    : "#" + ((channels.find((c) => c.id === channel) || {}).name || "");
  $("place").textContent = label;
  $("compose-label").textContent = "Message " + label;
  if (inHome) renderHome(s.home);
  else renderMessages(channel ? s.messages[channel] || [] : [], channel);
  renderModal(s.modal || []);
}

function go(place) {
  session.place = place;
  localStorage.setItem("pg.place", place);
  session.shown.feed = "";
  if (place === "home") act("home", {});
  render();
}

function connect() {
  if (session.stream) session.stream.close();
  const stream = new EventSource("/events?user=" + encodeURIComponent(session.user));
  session.stream = stream;
  stream.addEventListener("state", (event) => {
    session.state = JSON.parse(event.data);
    $("link").textContent = "connected";
    render();
  });
  stream.addEventListener("error", () => { $("link").textContent = "reconnecting… (is the playground running?)"; });
}

function currentChannel() {
  const s = session.state;
  if (session.place === "dm") { const dm = s.conversations.find((c) => c.is_im); return dm ? dm.id : null; }
  return session.place === "home" ? null : session.place;
}

document.addEventListener("DOMContentLoaded", () => {
  $("who").addEventListener("change", () => {
    session.user = $("who").value;
    localStorage.setItem("pg.user", session.user);
    session.shown = { feed: "", home: "", modal: "", machine: "" };
    connect();
    if (session.place === "home") act("home", {});
  });
  $("go-home").addEventListener("click", () => go("home"));
  $("go-dm").addEventListener("click", () => go("dm"));
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("compose").value.trim();
    const channel = currentChannel();
    if (!text || !channel) return;
    $("compose").value = "";
    act("command", { channel, text });
  });
  connect();
  if (session.place === "home") act("home", {});
});

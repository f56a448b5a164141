// Building the page from data without ever parsing it as HTML: every value reaches the page as
// text (textContent, attribute values), so a device name such as "<img onerror=…>" stays text.

/**
 * An element: `h("a", {href: "#/x", class: "y"}, "text", child)`. Attributes named `on…`
 * take a function (an event listener); `false`, `null` and `undefined` attributes are left out.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces `el`'s children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A labelled input: the label's `for` names the input, so that it is announced and clickable. */
let ids = 0;
export function field(labelText, input, help) {
  const id = input.id || `f${++ids}`;
  input.id = id;
  let helpEl = null;
  if (help) {
    helpEl = h("p", { class: "help", id: `${id}-help` }, help);
    input.setAttribute("aria-describedby", helpEl.id);
  }
  return h("div", { class: "field" }, h("label", { for: id }, labelText), input, helpEl);
}

/** A polite live region message (success) or an alert (error). */
export function notice(kind, text) {
  return h(
    "p",
    { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
    text,
  );
}

/** A definition list from [label, value] pairs. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]),
  );
}

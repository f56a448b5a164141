// The connectivity states as the console shows them: a mark and a label each, so that a state
// is never told by colour alone (the colour only repeats the mark).

import { h } from "./dom.js";
import { t } from "./i18n.js";

/** Every state, in the order the server reports them. */
export const STATES = [
  "responded",
  "pending",
  "unreachable",
  "unregistered",
  "push_failed",
  "never_pushed",
  "no_token",
];

const MARKS = {
  responded: "✔",
  pending: "↻",
  unreachable: "⚠",
  unregistered: "✖",
  push_failed: "!",
  never_pushed: "○",
  no_token: "–",
};

/** The state's mark and label, e.g. "✔ 更新成功". */
export function stateBadge(state) {
  return h(
    "span",
    { class: `state state-${state}`, "data-state": state },
    h("span", { class: "mark", "aria-hidden": "true" }, MARKS[state] || "?"),
    " ",
    t(`state.${state}`),
  );
}

/** Counts by state as a list of badges with numbers. */
export function stateCounts(states) {
  return h(
    "ul",
    { class: "counts" },
    STATES.map((s) =>
      h(
        "li",
        {},
        h("a", { href: `#/devices?state=${s}` }, stateBadge(s)),
        " ",
        h("strong", { "data-count": s }, String(states?.[s] ?? 0)),
      ),
    ),
  );
}

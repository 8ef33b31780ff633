// HTML built from templates whose every interpolated value is escaped unless it is itself
// HTML built here: identity names, reasons and actors come from operators and agents, and a
// reason such as `<script>` must show as text on every other operator's screen.

/** Markup that is already safe to insert. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => ESCAPES[ch]!);
}

/**
 * `html\`<td>${name}</td>\`` escapes `name`; an `Html` value is inserted as is; arrays are
 * joined; undefined, null and false insert nothing (for `${cond && html\`…\`}`).
 */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  values.forEach((value, i) => {
    out += fragment(value) + strings[i + 1]!;
  });
  return new Html(out);
}

function fragment(value: unknown): string {
  if (value === undefined || value === null || value === false) return '';
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(fragment).join('');
  return escapeHtml(String(value));
}

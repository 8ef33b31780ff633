// Where a command's output goes and in which format: text for people, JSON or YAML for
// scripts.
import YAML from 'yaml';

export const OUTPUT_FORMATS = ['text', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export interface GlobalOptions {
  nats: string;
  output: OutputFormat;
}

/** An API response as the operator asked for it: pretty JSON or YAML (text is the caller's). */
export function formatData(format: Exclude<OutputFormat, 'text'>, data: unknown): string {
  return format === 'json' ? JSON.stringify(data, null, 2) : YAML.stringify(data).trimEnd();
}

/**
 * C0 controls other than tab and newline, DEL, and C1 controls. Text from the network (a
 * pending caller's name, a service's reply, a server's error detail) must not drive the
 * operator's terminal: an escape sequence could rewrite what was printed before it, or
 * worse.
 */
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** `text` safe to print on a terminal: each control character shown as U+FFFD (�). */
export function printable(text: string): string {
  return text.replace(CONTROL_CHARACTERS, '\ufffd');
}

/** Where a command's output goes: the result on stdout, progress and notices per format. */
export class Output {
  constructor(readonly format: OutputFormat) {}

  /** The command's result: the API document as JSON/YAML, or its text view. */
  result(data: unknown, text: () => string): void {
    process.stdout.write(`${this.format === 'text' ? printable(text()) : formatData(this.format, data)}\n`);
  }

  /** Progress lines; JSON/YAML readers get only the final document. */
  progress(line: string): void {
    if (this.format === 'text') process.stdout.write(`${printable(line)}\n`);
  }

  /** Side remarks (following a standby to the active controller), text mode only. */
  notice(message: string): void {
    if (this.format === 'text') process.stderr.write(`understudy: ${printable(message)}\n`);
  }

  /** What went wrong and what to do next: always, on stderr. */
  warn(message: string): void {
    process.stderr.write(`understudy: ${printable(message)}\n`);
  }
}

/**
 * One result or one event of a stream (watch): JSON as one line, YAML as one `---` document,
 * so a stream of them stays parseable.
 */
export const printItem = (opts: GlobalOptions, text: string, json: unknown) =>
  process.stdout.write(
    `${
      opts.output === 'json'
        ? JSON.stringify(json)
        : opts.output === 'yaml'
          ? `---\n${YAML.stringify(json).trimEnd()}`
          : printable(text)
    }\n`,
  );

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

/** Where a command's output goes: the result on stdout, progress and notices per format. */
export class Output {
  constructor(readonly format: OutputFormat) {}

  /** The command's result: the API document as JSON/YAML, or its text view. */
  result(data: unknown, text: () => string): void {
    process.stdout.write(`${this.format === 'text' ? text() : formatData(this.format, data)}\n`);
  }

  /** Progress lines; JSON/YAML readers get only the final document. */
  progress(line: string): void {
    if (this.format === 'text') process.stdout.write(`${line}\n`);
  }

  /** Side remarks (following a standby to the active controller), text mode only. */
  notice(message: string): void {
    if (this.format === 'text') process.stderr.write(`understudy: ${message}\n`);
  }

  /** What went wrong and what to do next: always, on stderr. */
  warn(message: string): void {
    process.stderr.write(`understudy: ${message}\n`);
  }
}

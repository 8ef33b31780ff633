// The permission table as Markdown, for docs/nats-authorization.md (a unit test keeps the two
// equal): one row per entry, role by role, with its reason.
import { ROLES, rolePermissions, type Direction } from './permissions.js';

const cell = (text: string) => text.replace(/\|/g, '\\|');

function rows(role: string, operation: string, d: Direction): string[] {
  return (['allow', 'deny'] as const).flatMap((kind) =>
    d[kind].map((r) => `| ${role} | ${operation} | ${kind} | \`${cell(r.subject)}\` | ${cell(r.why)} |`),
  );
}

/** Every role's entries (agents as the shared user: a per-node user has its node for `*`). */
export function renderTable(): string {
  const lines = ['| Role | Operation | | Subject | Why |', '| --- | --- | --- | --- | --- |'];
  for (const role of ROLES) {
    const p = rolePermissions(role);
    lines.push(...rows(role, 'publish', p.publish), ...rows(role, 'subscribe', p.subscribe));
    lines.push(
      p.responses
        ? `| ${role} | reply | allow | (\`allow_responses\`) | ${cell(p.responses.why)} |`
        : `| ${role} | reply | deny | (no \`allow_responses\`) | answers no one's request |`,
    );
  }
  return lines.join('\n');
}

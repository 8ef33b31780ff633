// Every command's help ends with an example, and every example is one the CLI accepts: its
// words name real (sub)commands and options. The completion script, run in a real bash,
// completes commands and the options of the command being typed.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import type { Command } from 'commander';
import { program } from '../../cmd/understudy/program.js';
import { allCommands, commandPath, completionScript, EXAMPLES, packageVersion } from '../../pkg/cli/help.js';
import { readFileSync } from 'node:fs';

/** The help a command prints (with the text added after it). */
function helpOf(cmd: Command): string {
  let out = '';
  cmd.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
  cmd.outputHelp();
  return out;
}

/** Words of a shell line: quotes kept together, comment and `VAR=…` prefixes dropped. */
function words(line: string): string[] {
  const tokens = (line.replace(/\s+#.*$/, '').match(/"[^"]*"|'[^']*'|\S+/g) ?? []).filter(
    (t) => !/^[A-Z_]+=/.test(t),
  );
  const end = tokens.findIndex((t) => t === '<' || t === '>' || t === '|');
  return end < 0 ? tokens : tokens.slice(0, end);
}

/** Why `example` would not do what its place under `path` says (undefined: it would). */
function checkExample(example: string, path: string): string | undefined {
  const [first, ...rest] = words(example);
  if (first !== program.name()) return `does not start with ${program.name()}`;
  let cmd: Command = program;
  const options = () => [...cmd.options, ...program.options];
  for (let i = 0; i < rest.length; i++) {
    const w = rest[i]!;
    if (w.startsWith('-') && w !== '-') {
      const option = options().find((o) => o.long === w || o.short === w);
      if (!option) return `${commandPath(cmd) || program.name()} has no option ${w}`;
      if (option.required || option.optional) i++;
      continue;
    }
    const sub = cmd.commands.find((c) => c.name() === w);
    if (sub) cmd = sub;
  }
  // Shown under `path`: it names that command or one below it (the program's name them all).
  const named = commandPath(cmd);
  return named === path || named.startsWith(path === '' ? '' : `${path} `)
    ? undefined
    : `names '${named}', shown under '${path}'`;
}

describe('CLI help: an example under every command', () => {
  for (const cmd of allCommands(program)) {
    const path = commandPath(cmd);
    it(`'${path || program.name()}' shows an example that parses`, () => {
      expect(helpOf(cmd)).to.match(/\nExamples?:\n {2}understudy/);
      for (const example of EXAMPLES[path] ?? [])
        expect(checkExample(example, path), example).to.equal(undefined);
    });
  }

  it('a stale example is caught (an option renamed, a command that does not match)', () => {
    expect(checkExample('understudy list --healthy down', 'list')).to.equal('list has no option --healthy');
    expect(checkExample('understudy status demo', 'list')).to.equal("names 'status', shown under 'list'");
  });
});

describe('CLI version', () => {
  it("--version prints the package's version", () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(packageVersion()).to.equal(pkg.version);
    expect(program.version()).to.equal(pkg.version);
  });
});

describe('CLI completion (real bash)', () => {
  const script = completionScript(program, 'bash');
  const complete = (...typed: string[]) =>
    execFileSync(
      'bash',
      [
        '-c',
        `${script}\nCOMP_WORDS=(${typed.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${typed.length - 1}; _understudy; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ],
      { encoding: 'utf8' },
    )
      .split('\n')
      .filter(Boolean);

  it('completes a command', () => {
    expect(complete('understudy', 'sw')).to.deep.equal(['switchover']);
  });

  it("completes the typed command's options, and the global ones", () => {
    expect(complete('understudy', 'list', '--he')).to.deep.equal(['--health']);
    expect(complete('understudy', 'switchover', 'demo', '--to')).to.deep.equal([
      '--to',
      '--token',
      '--token-file',
    ]);
  });

  it('completes subcommands, past global options and their values', () => {
    expect(complete('understudy', '--output', 'json', 'credential', '')).to.include.members([
      'set',
      'delete',
    ]);
    expect(complete('understudy', 'credential', 'set', 'demo', '--fr')).to.deep.equal(['--from-file']);
  });

  it('completes a fixed argument value', () => {
    expect(complete('understudy', 'completion', '')).to.include.members(['bash', 'zsh']);
  });

  it('zsh: a file $fpath loads (#compdef first), the same function through bashcompinit, PATH left alone', () => {
    const zsh = completionScript(program, 'zsh');
    expect(zsh.split('\n').slice(0, 2)).to.deep.equal([
      '#compdef understudy',
      'autoload -U +X bashcompinit && bashcompinit',
    ]);
    expect(zsh).to.include(script.slice(script.indexOf('_understudy() {')));
    // zsh ties `path` to PATH: a function that set it would break every command it runs.
    expect(script).to.not.match(/\blocal [^\n]*\bpath\b|(^|\s)path=/);
  });
});

// Errors the agent's control plane turns into replies (agent.ts maps the code).
export class RunnerError extends Error {
  constructor(
    message: string,
    readonly code: 'not-leader' | 'stopped' | 'failed',
  ) {
    super(message);
    this.name = 'RunnerError';
  }
}

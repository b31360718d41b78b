/**
 * Steps done during an ADD, undone in reverse when a later step fails, so a failed ADD leaves nothing
 * behind (no lease, no veth, no route). Undo errors are collected, never thrown over the original one.
 */
export class UndoStack {
  private readonly steps: { what: string; undo: () => Promise<void> | void }[] = [];

  push(what: string, undo: () => Promise<void> | void): void {
    this.steps.push({ what, undo });
  }

  /** Forget the steps: the operation succeeded. */
  commit(): void {
    this.steps.length = 0;
  }

  async unwind(): Promise<{ what: string; error: unknown }[]> {
    const failures: { what: string; error: unknown }[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.undo();
      } catch (error) {
        failures.push({ what: step.what, error });
      }
    }
    return failures;
  }
}

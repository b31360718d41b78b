/** An error's message for a log line or an operator's reason; anything thrown that is not an Error, as text. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Loaded into every vitest worker (vitest.config.ts, setupFiles). Ctrl-C reaches the whole process
 * group, workers included, and a worker's default on SIGINT is to die with its test file's `finally`
 * and afterAll unrun: the namespaces, agents, pod pins and temp directories it made would stay. With
 * this, SIGINT and SIGHUP undo them first (signal-undo.ts). Not SIGTERM: vitest stops a worker with
 * it once its files are done.
 */
import { undoOnSignals } from './signal-undo.ts';

undoOnSignals(['SIGINT', 'SIGHUP'], { detach: true });

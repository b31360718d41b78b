/**
 * argv that runs a command in a mount namespace of its own, as a container has, after `setup`: a shell
 * snippet that sees `params` as "$0", "$1", ... (mounts made there are the command's alone). The
 * command's argv follows. `pid`: in a PID namespace of its own too, the command gone when unshare is
 * killed.
 */
export function inOwnMounts(
  setup: string,
  params: [string, ...string[]],
  opts: { pid?: boolean } = {},
): string[] {
  return [
    'unshare',
    ...(opts.pid === true ? ['--pid', '--fork', '--kill-child'] : []),
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    // "$@" after the parameters past "$0" are shifted off: the command.
    `${setup} && shift ${params.length - 1} && exec "$@"`,
    ...params,
  ];
}

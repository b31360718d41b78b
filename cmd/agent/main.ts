import { trellisVersion } from '../../pkg/version.ts';

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write(`trellis-agent ${trellisVersion()}\n`);
  process.exit(0);
}
process.stderr.write('trellis-agent: not implemented yet\n');
process.exit(2);

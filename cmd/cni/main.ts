declare const TRELLIS_VERSION: string;
const version = typeof TRELLIS_VERSION === 'string' ? TRELLIS_VERSION : 'dev';
if (process.env.CNI_COMMAND === 'VERSION') {
  process.stdout.write(
    `${JSON.stringify({ cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] })}\n`,
  );
  process.exit(0);
}
process.stdout.write(`trellis CNI plugin ${version}\n`);

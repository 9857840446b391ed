// Renders an AsyncAPI document to one self-contained HTML page (scripts, styles and
// the document inline; nothing is fetched when it is opened).
// Usage: node render.cjs INPUT.yaml OUTPUT_DIR   (writes OUTPUT_DIR/asyncapi.html)
const Generator = require('@asyncapi/generator');

async function main() {
  const [input, outDir] = process.argv.slice(2);
  if (!input || !outDir) {
    console.error('usage: node render.cjs INPUT.yaml OUTPUT_DIR');
    process.exit(2);
  }
  const generator = new Generator('@asyncapi/html-template', outDir, {
    forceWrite: true,
    templateParams: { singleFile: 'true', outFilename: 'asyncapi.html' },
  });
  await generator.generateFromFile(input);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

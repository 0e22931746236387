// End to end in headless Chromium: build a txt2img graph with BlockSwap on an empty canvas by UI
// actions only, run it on the tiny model, see the image, save, reload, and get the same graph;
// then open the main workflow, with its positions and without, and find every node in view and
// none overlapping another.
//
// Needs a running `swapgraph serve` at SWAPGRAPH_URL; CHROMIUM names the browser binary and
// ARTIFACTS the folder for the screenshot. Exits non-zero with the reason on any failure.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';

const url = process.env.SWAPGRAPH_URL;
const artifacts = process.env.ARTIFACTS || '.';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
assert.ok(url, 'SWAPGRAPH_URL is not set');
mkdirSync(artifacts, { recursive: true });

// Containers often give /dev/shm only 64 MB, too little for a renderer drawing a 2200x1500 page;
// without these flags the renderer can crash ("Target crashed") before the page loads.
const launchArgs = ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'];

// A crash of the browser itself says nothing about the editor, so the scenario gets one more
// try in a fresh browser; any other failure, or a second crash, fails the test.
const browserCrashed = (error) => /Target crashed|has been closed/.test(String(error));

for (let attempt = 1; ; attempt++) {
  const browser = await chromium.launch({ executablePath, args: launchArgs });
  try {
    await scenario(browser);
    console.log('editor e2e: ok');
    break;
  } catch (error) {
    if (attempt === 1 && browserCrashed(error)) {
      console.error(`the browser crashed (${String(error).split('\n')[0]}); trying again in a fresh one`);
      continue;
    }
    console.error(error);
    process.exitCode = 1;
    break;
  } finally {
    await browser.close().catch(() => {});
  }
}

async function scenario(browser) {
  const page = await browser.newPage({ viewport: { width: 2200, height: 1500 } });
  page.setDefaultTimeout(60_000);
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  try {
    await steps(page, consoleErrors);
  } catch (error) {
    await page.screenshot({ path: `${artifacts}/editor-failure.png` }).catch(() => {});
    throw error;
  }
}

async function steps(page, consoleErrors) {
  await page.goto(url);
  await page.waitForSelector('[data-add="KSampler"]');

  const add = async (type) => page.click(`[data-add="${type}"]`);
  for (const type of ['CheckpointLoaderSimple', 'CLIPTextEncode', 'CLIPTextEncode', 'EmptyLatentImage', 'BlockSwap', 'KSampler', 'VAEDecode', 'SaveImage']) {
    await add(type);
  }
  await page.click('.react-flow__controls-fitview');
  await page.waitForTimeout(300);

  const handle = (node, side, name) => page.locator(`.react-flow__node[data-id="${node}"] .react-flow__handle.${side}[data-handleid="${name}"]`);
  const edgeCount = () => page.locator('.react-flow__edge').count();
  const connect = async (from, output, to, input) => {
    const a = await handle(from, 'source', output).boundingBox();
    const b = await handle(to, 'target', input).boundingBox();
    assert.ok(a && b, `handles ${from}.${output} -> ${to}.${input} not on screen`);
    await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
    await page.mouse.down();
    await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 12 });
    await page.mouse.up();
  };

  const links = [
    ['checkpointloadersimple', 'model', 'blockswap', 'model'],
    ['blockswap', 'model', 'ksampler', 'model'],
    ['checkpointloadersimple', 'clip', 'cliptextencode', 'clip'],
    ['checkpointloadersimple', 'clip', 'cliptextencode_2', 'clip'],
    ['cliptextencode', 'conditioning', 'ksampler', 'positive'],
    ['cliptextencode_2', 'conditioning', 'ksampler', 'negative'],
    ['emptylatentimage', 'latent', 'ksampler', 'latent_image'],
    ['ksampler', 'latent', 'vaedecode', 'samples'],
    ['checkpointloadersimple', 'vae', 'vaedecode', 'vae'],
    ['vaedecode', 'image', 'saveimage', 'images'],
  ];
  for (const [i, link] of links.entries()) {
    await connect(...link);
    assert.equal(await edgeCount(), i + 1, `link ${link.join(' ')} was not made`);
  }
  // A CLIP output cannot feed a MODEL input: the editor refuses it while dragging.
  await connect('checkpointloadersimple', 'clip', 'ksampler', 'model');
  assert.equal(await edgeCount(), links.length, 'a mismatched link was accepted');

  const param = (node, name) => page.locator(`.react-flow__node[data-id="${node}"] [data-param="${name}"]`);
  await param('checkpointloadersimple', 'ckpt_name').fill('builtin:tiny-sdxl');
  await param('cliptextencode', 'text').fill('a lighthouse at dusk');
  await param('cliptextencode_2', 'text').fill('blurry');
  await param('emptylatentimage', 'width').fill('128');
  await param('emptylatentimage', 'height').fill('128');
  await param('ksampler', 'steps').fill('3');
  await param('blockswap', 'debug').check();
  // An optional param shows "off" and, emptied, is left out: the run below reads no preset file.
  assert.equal(await param('blockswap', 'preset').getAttribute('placeholder'), 'off');
  await param('blockswap', 'preset').fill('low_vram.json');
  await param('blockswap', 'preset').fill('');
  // Sockets take the colour their type is registered with (MODEL: #b39ddb).
  const modelColour = await handle('checkpointloadersimple', 'source', 'model').evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(modelColour, 'rgb(179, 157, 219)');

  // Validation errors land on the node and field: an out-of-range value first.
  await param('ksampler', 'cfg').fill('1000');
  await page.click('[data-action="validate"]');
  await page.waitForSelector('.react-flow__node[data-id="ksampler"] .param.invalid');
  // The problems panel lists it; a click selects the node it names.
  await page.click('[data-panel="problems"] [data-problem="ksampler"]');
  await page.waitForSelector('.react-flow__node.selected[data-id="ksampler"]');
  await param('ksampler', 'cfg').fill('5');

  await page.click('[data-action="run"]');
  const image = page.locator('[data-image]').first();
  await image.waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector('[data-image]');
    return img && img.complete && img.naturalWidth === 128;
  });
  await page.waitForSelector('[data-state="succeeded"]');
  const savedImage = await image.getAttribute('data-image');
  await page.waitForSelector('[data-panel="queue"] [data-state="succeeded"]');
  // The gallery shows every job's images.
  await page.waitForSelector('[data-panel="gallery"] [data-gallery-image]');
  // The devices panel lists the server's device; the queue says where the job ran.
  await page.waitForSelector('[data-panel="devices"] [data-runner="cpu"]');
  assert.match(await page.locator('[data-panel="queue"] [data-state="succeeded"]').first().innerText(), /on cpu/);
  await page.waitForSelector('.react-flow__node[data-id="ksampler"] .node-done');
  await page.waitForSelector('.react-flow__node[data-id="ksampler"] [data-progress="3/3"]');
  // The sampler's node shows the last step's preview.
  await page.waitForSelector('.react-flow__node[data-id="ksampler"] img[data-preview]');
  assert.match(await page.locator('.react-flow__node[data-id="ksampler"] img[data-preview]').getAttribute('src'), /^data:image\/png;base64,/);
  await page.waitForSelector('[data-panel="memory"]');
  assert.match(await page.locator('[data-panel="memory"]').innerText(), /BlockSwap/);
  // BlockSwap drawn: the pass's timeline has one copy bar per streamed unit (as many as the
  // report says it swaps) and one compute bar per unit; memory over the run has its points.
  const swapped = Number((await page.locator('[data-panel="memory"]').innerText()).match(/units swapped\s+(\d+) of (\d+)/)[1]);
  assert.ok(swapped > 0, 'BlockSwap swapped no unit');
  const timeline = page.locator('[data-chart="timeline"]');
  await timeline.waitFor();
  assert.equal(Number(await timeline.getAttribute('data-copy-bars')), swapped);
  assert.ok(Number(await timeline.getAttribute('data-compute-bars')) >= swapped);
  // A point for each sampler step (3) besides the reports before and after.
  assert.ok(Number(await page.locator('[data-chart="memory"]').getAttribute('data-points')) >= 5);
  await page.screenshot({ path: `${artifacts}/editor-txt2img.png` });
  // The image opens the workflow it carries.
  await page.click(`[data-open-image="${savedImage}"]`);
  await page.waitForSelector('[data-message]:has-text("Opened the workflow of")');
  assert.equal(await page.locator('.react-flow__node').count(), 8);

  await page.fill('[data-field="filename"]', 'e2e_txt2img.yaml');
  await page.click('[data-action="save"]');
  await page.waitForSelector('[data-message]:has-text("Saved e2e_txt2img.yaml")');
  const saved = await (await page.request.get(`${url}api/workflows/e2e_txt2img.yaml`)).text();

  await page.reload();
  await page.waitForSelector('[data-add="KSampler"]');
  await page.waitForSelector('[data-action="open"] option[value="e2e_txt2img.yaml"]', { state: 'attached' });
  await page.selectOption('[data-action="open"]', 'e2e_txt2img.yaml');
  await page.waitForSelector('[data-message]:has-text("Loaded e2e_txt2img.yaml")');
  assert.equal(await page.locator('.react-flow__node').count(), 8);
  // React Flow draws edges only after it has measured the nodes: wait for them, then check.
  await page.waitForFunction((n) => document.querySelectorAll('.react-flow__edge').length >= n, links.length, { timeout: 15_000 }).catch(() => {});
  assert.equal(await edgeCount(), links.length);
  assert.equal(await param('ksampler', 'steps').inputValue(), '3');

  await page.fill('[data-field="filename"]', 'e2e_again.yaml');
  await page.click('[data-action="save"]');
  await page.waitForSelector('[data-message]:has-text("Saved e2e_again.yaml")');
  const again = await (await page.request.get(`${url}api/workflows/e2e_again.yaml`)).text();
  assert.equal(again, saved, 'the graph changed on a save, reload and save');
  assert.match(saved, /ui:\n\s+x: -?\d+\n\s+y: -?\d+/);

  // The main workflow as written, and with its positions taken out (as a hand-written or
  // imported one comes): opened, it is laid out where its nodes would overlap and fitted.
  const main = readFileSync('workflows/instantid_blockswap.yaml', 'utf8');
  const unplaced = main.replace(/\n\s+ui: \{[^}]*\}/g, '');
  assert.notEqual(unplaced, main, 'the main workflow has positions to take out');
  for (const [name, text] of [['e2e_main.yaml', main], ['e2e_unplaced.yaml', unplaced]]) {
    const put = await page.request.put(`${url}api/workflows/${name}`, { data: text, headers: { 'content-type': 'application/yaml' } });
    assert.ok(put.ok(), `saving ${name}: ${put.status()}`);
    await page.reload();
    await page.waitForSelector(`[data-action="open"] option[value="${name}"]`, { state: 'attached' });
    await page.selectOption('[data-action="open"]', name);
    await page.waitForSelector(`[data-message]:has-text("Loaded ${name}")`);
    await page.waitForTimeout(1000);
    const view = await page.locator('.react-flow').boundingBox();
    const boxes = await page.locator('.react-flow__node').evaluateAll((nodes) =>
      nodes.map((n) => {
        const r = n.getBoundingClientRect();
        return { id: n.dataset.id, x: r.x, y: r.y, width: r.width, height: r.height };
      }),
    );
    assert.ok(boxes.length >= 10, `${name}: ${boxes.length} nodes drawn`);
    for (const b of boxes) {
      assert.ok(
        b.x >= view.x && b.y >= view.y && b.x + b.width <= view.x + view.width && b.y + b.height <= view.y + view.height,
        `${name}: node ${b.id} is outside the view`,
      );
    }
    for (const [i, a] of boxes.entries()) {
      for (const b of boxes.slice(i + 1)) {
        const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
        assert.ok(apart, `${name}: nodes ${a.id} and ${b.id} overlap`);
      }
    }
  }
  // Search-to-add: a double click on the empty canvas, a few letters, Enter.
  const before = await page.locator('.react-flow__node').count();
  const view = await page.locator('.react-flow').boundingBox();
  await page.locator('.react-flow__pane').dblclick({ position: { x: view.width / 2, y: 12 } });
  await page.fill('[data-field="node-search"]', 'vae decode tiled');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.react-flow__node[data-id="vaedecodetiled"]');
  assert.equal(await page.locator('.react-flow__node').count(), before + 1);
  assert.equal(await page.locator('[data-unsaved="true"]').count(), 1, 'the added node is not shown as unsaved');
  // Undo takes the added node away again, redo brings it back.
  const count = () => page.locator('.react-flow__node').count();
  await page.keyboard.press('Control+z');
  await page.waitForFunction((n) => document.querySelectorAll('.react-flow__node').length === n, before);
  await page.click('[data-action="redo"]');
  await page.waitForSelector('.react-flow__node[data-id="vaedecodetiled"]');
  assert.equal(await count(), before + 1);
  // A link from the decoder's image dropped on the empty canvas offers the nodes that take an
  // image; the one picked comes linked.
  const edgesBefore = await edgeCount();
  const from = await handle('decode', 'source', 'image').boundingBox();
  await page.mouse.move(from.x + from.width / 2, from.y + from.height / 2);
  await page.mouse.down();
  await page.mouse.move(view.x + 30, view.y + 14, { steps: 12 });
  await page.mouse.up();
  await page.waitForSelector('[data-panel="node-search"] [data-pick="PreviewImage"]');
  assert.equal(await page.locator('[data-panel="node-search"] [data-pick="KSampler"]').count(), 0, 'a sampler cannot take an image');
  await page.fill('[data-field="node-search"]', 'preview');
  await page.keyboard.press('Enter');
  await page.waitForSelector('.react-flow__node[data-id="previewimage"]');
  await page.waitForFunction((n) => document.querySelectorAll('.react-flow__edge').length === n, edgesBefore + 1);
  // Copy and paste: the selected node comes again with a fresh id; Ctrl+D duplicates.
  await page.locator('.react-flow__node[data-id="vaedecodetiled"] .node-header').click();
  await page.keyboard.press('Control+c');
  await page.keyboard.press('Control+v');
  await page.waitForSelector('.react-flow__node[data-id="vaedecodetiled_2"]');
  await page.keyboard.press('Control+d');
  await page.waitForSelector('.react-flow__node[data-id="vaedecodetiled_3"]');
  // Groups: a box around the selected nodes; moved by its header, it moves them; its title is
  // edited in place. A collapsed node shows its header alone. Both are saved and come back.
  // (The pasted nodes lie over each other; the second is Ctrl-clicked where the first, raised
  // by its selection, leaves its header free.)
  await page.locator('.react-flow__node[data-id="vaedecodetiled"] .node-header .node-id').click();
  const second = page.locator('.react-flow__node[data-id="vaedecodetiled_2"] .node-header');
  const secondBox = await second.boundingBox();
  await second.click({ position: { x: secondBox.width - 6, y: secondBox.height / 2 }, modifiers: ['Control'] });
  await page.click('[data-action="group"]');
  await page.waitForSelector('.react-flow__node[data-id="#group1"]');
  await page.click('.react-flow__controls-fitview');
  await page.waitForTimeout(300);
  const groupHeader = page.locator('.react-flow__node[data-id="#group1"] .group-header');
  await groupHeader.dblclick();
  await page.locator('.react-flow__node[data-id="#group1"] .group-title').fill('Decoders');
  await page.keyboard.press('Enter');
  const member = page.locator('.react-flow__node[data-id="vaedecodetiled_2"]');
  const memberBefore = await member.boundingBox();
  const header = await groupHeader.boundingBox();
  await page.mouse.move(header.x + header.width - 20, header.y + header.height / 2);
  await page.mouse.down();
  await page.mouse.move(header.x + header.width + 60, header.y + header.height / 2 + 40, { steps: 10 });
  await page.mouse.up();
  const memberAfter = await member.boundingBox();
  const headerAfter = await groupHeader.boundingBox();
  const moved = { x: headerAfter.x - header.x, y: headerAfter.y - header.y };
  assert.ok(moved.x > 40 && moved.y > 20, `the group did not move: ${JSON.stringify(moved)}`);
  assert.ok(
    Math.abs(memberAfter.x - memberBefore.x - moved.x) < 2 && Math.abs(memberAfter.y - memberBefore.y - moved.y) < 2,
    'the group did not move its node with it',
  );
  await page.click('[data-collapse="vaedecodetiled"]');
  await page.waitForSelector('.react-flow__node[data-id="vaedecodetiled"] [data-collapsed]');
  await page.fill('[data-field="filename"]', 'e2e_groups.yaml');
  await page.click('[data-action="save"]');
  await page.waitForSelector('[data-message]:has-text("Saved e2e_groups.yaml")');
  const grouped = await (await page.request.get(`${url}api/workflows/e2e_groups.yaml`)).text();
  assert.match(grouped, /groups:\n\s+- title: Decoders/);
  assert.match(grouped, /collapsed: true/);
  await page.reload();
  await page.waitForSelector('[data-action="open"] option[value="e2e_groups.yaml"]', { state: 'attached' });
  await page.selectOption('[data-action="open"]', 'e2e_groups.yaml');
  await page.waitForSelector('[data-message]:has-text("Loaded e2e_groups.yaml")');
  await page.waitForSelector('.react-flow__node[data-id="#group1"] [data-group="Decoders"]');
  await page.waitForSelector('.react-flow__node[data-id="vaedecodetiled"] [data-collapsed]');
  // Booleans show a control that can be seen and toggled.
  const debug = param('swap', 'debug');
  assert.ok(await debug.isVisible(), "BlockSwap's debug toggle is not visible");
  await page.screenshot({ path: `${artifacts}/editor-main.png` });

  // Dropped on the canvas: the PNG the run saved opens the graph that made it, and ComfyUI's
  // editor JSON opens through the importer.
  const dropFile = async (name, bytes, type) => {
    const transfer = await page.evaluateHandle(
      ({ name, b64, type }) => {
        const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([data], name, { type }));
        return transfer;
      },
      { name, b64: Buffer.from(bytes).toString('base64'), type },
    );
    await page.dispatchEvent('.canvas', 'drop', { dataTransfer: transfer });
    await page.waitForSelector(`[data-message]:has-text("Opened ${name}")`);
  };
  const png = await (await page.request.get(`${url}api/images/${savedImage}`)).body();
  await dropFile('made.png', png, 'image/png');
  assert.equal(await page.locator('.react-flow__node').count(), 8, 'the PNG did not give back its graph');
  assert.equal(await param('ksampler', 'steps').inputValue(), '3');
  await dropFile('comfy.json', readFileSync('tests/cases/comfyui/txt2img_editor.json'), 'application/json');
  assert.ok((await page.locator('.react-flow__node').count()) >= 7, 'the ComfyUI workflow did not open');
  assert.deepEqual(consoleErrors, [], 'the page logged errors');
}

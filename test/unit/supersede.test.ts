// Proves what a promoted primary's link listener answers a primary that dials it as its secondary
// (replyToPrimaryHello, docs/failover.md "Fencing"): an old primary whose chain this site's extends
// gets a superseded frame carrying this site's chain, which its own codec accepts and in which it
// finds its generation; two promotions from one chain get `split-brain` naming both current
// generations and where each started; a chain with nothing in common gets `unrelated-site`; the
// same generation gets `same-generation`; a chain that extends this site's gets `superseded-here`;
// a malformed chain gets `hello-invalid`. Each answer's relation is handed back for the log.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareHistories, type Generation, type PrimaryIdentity } from '../../src/core/identity.ts';
import { limits } from '../../src/core/limits.ts';
import { replyToPrimaryHello } from '../../src/core/supersede.ts';
import { decodeFrame, encodeFrame, type HelloFrame, protocolVersion } from '../../src/protocol/frames.ts';

const oldSite = 'a'.repeat(32);
const promotedSite = 'b'.repeat(32);
const otherSite = 'c'.repeat(32);
const first: Generation = { id: '1'.repeat(32), startedAt: 1, primarySite: oldSite };
const promotion: Generation = { id: '2'.repeat(32), startedAt: 120, primarySite: promotedSite };
const otherPromotion: Generation = { id: '3'.repeat(32), startedAt: 118, primarySite: otherSite };

const promoted: PrimaryIdentity = { site: promotedSite, generations: [first, promotion] };

function helloFrom(site: string, generations: Generation[]): HelloFrame {
  return {
    type: 'hello',
    protocolVersion,
    sessionId: 9,
    connectionIndex: 0,
    connectionCount: 1,
    group: 'g',
    blockBytes: 4096,
    volumes: [{ name: 'data', sizeBytes: 1 << 20 }],
    primarySite: site,
    generations,
  };
}

test('an old primary superseded by this site gets a superseded frame with this site chain', () => {
  const reply = replyToPrimaryHello(promoted, helloFrom(oldSite, [first]));
  assert.deepEqual(reply.frame, { type: 'superseded', site: promotedSite, generations: [first, promotion] });
  assert.deepEqual(reply.relation, { relation: 'ahead', supersededAt: 120, superseding: promotion });
  // Through the codec, the old primary reads a chain that is ahead of its own.
  const [received] = decodeFrame(encodeFrame(reply.frame)).frames;
  assert.ok(received?.type === 'superseded');
  assert.equal(compareHistories(received.generations, [first]).relation, 'ahead');
});

test("a chain longer than a hello carries is sent as its newest generations, still holding the old primary's", () => {
  const generations = Array.from({ length: limits.generationsInHelloMax + 5 }, (_, index) => ({
    id: (index + 1).toString(16).padStart(32, '0'),
    startedAt: index * 10 + 1,
    primarySite: promotedSite,
  }));
  const old = generations.slice(0, -1);
  const reply = replyToPrimaryHello(
    { site: promotedSite, generations },
    helloFrom(promotedSite, old.slice(-limits.generationsInHelloMax)),
  );
  assert.ok(reply.frame.type === 'superseded');
  assert.equal(reply.frame.generations.length, limits.generationsInHelloMax);
  assert.deepEqual(reply.frame.generations.at(-1), generations.at(-1));
  assert.equal(decodeFrame(encodeFrame(reply.frame)).error, null);
  assert.equal(compareHistories(reply.frame.generations, old).relation, 'ahead');
});

test('a site promoted from the same chain is refused as split-brain, naming both generations and their starts', () => {
  const reply = replyToPrimaryHello(promoted, helloFrom(otherSite, [first, otherPromotion]));
  assert.ok(reply.frame.type === 'error');
  assert.equal(reply.frame.code, 'split-brain');
  for (const named of [
    promotion.id,
    otherPromotion.id,
    first.id,
    'cycle 120',
    'cycle 118',
    promotedSite,
    otherSite,
  ])
    assert.ok(reply.frame.message.includes(named), `names ${named}: ${reply.frame.message}`);
  assert.equal(reply.relation?.relation, 'diverged');
});

test('unrelated, same generation and a newer dialler are refused by name; so is a malformed chain', () => {
  const foreign: Generation = { id: '4'.repeat(32), startedAt: 1, primarySite: otherSite };
  const unrelated = replyToPrimaryHello(promoted, helloFrom(otherSite, [foreign]));
  assert.equal(unrelated.frame.type === 'error' && unrelated.frame.code, 'unrelated-site');
  assert.equal(unrelated.relation?.relation, 'unrelated');

  const itself = replyToPrimaryHello(promoted, helloFrom(promotedSite, [first, promotion]));
  assert.equal(itself.frame.type === 'error' && itself.frame.code, 'same-generation');
  assert.match(itself.frame.type === 'error' ? itself.frame.message : '', /dialling itself/);

  const later: Generation = { id: '5'.repeat(32), startedAt: 300, primarySite: otherSite };
  const newer = replyToPrimaryHello(promoted, helloFrom(otherSite, [first, promotion, later]));
  assert.equal(newer.frame.type === 'error' && newer.frame.code, 'superseded-here');
  assert.match(newer.frame.type === 'error' ? newer.frame.message : '', /from cycle 300 on/);
  assert.equal(newer.relation?.relation, 'behind');

  // A chain ending at another site than the hello's primary: nothing is compared, let alone sent.
  const invalid = replyToPrimaryHello(promoted, helloFrom(otherSite, [first]));
  assert.equal(invalid.frame.type === 'error' && invalid.frame.code, 'hello-invalid');
  assert.equal(invalid.relation, null);
  assert.equal(replyToPrimaryHello(promoted, helloFrom(oldSite, [])).relation, null);
});

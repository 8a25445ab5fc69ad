// When a secondary may be promoted (node/promotion.ts): the facts it reports decide, before
// anything is touched.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Generation } from '../../src/core/identity.ts';
import { promotionRefusal } from '../../src/node/promotion.ts';
import type { PromotionFacts } from '../../src/node/secondary-node.ts';

const chain: Generation[] = [{ id: '1'.repeat(32), startedAt: 1, primarySite: 'a'.repeat(32) }];
const bound = { primarySite: 'a'.repeat(32), generation: '1'.repeat(32), history: chain };

function facts(overrides: Partial<PromotionFacts>): PromotionFacts {
  return {
    primaryConnected: false,
    lastContact: null,
    secondsSinceContact: null,
    applied: 7,
    stored: 7,
    applicableThrough: 7,
    newestCycleSeen: 9,
    cyclesSeenBeyondApplicable: 2,
    imageConsistent: true,
    primary: bound,
    history: chain,
    ...overrides,
  };
}

test('a promotion is refused for a site with nothing, an inconsistent image, no chain, or a live primary', () => {
  assert.match(promotionRefusal(facts({}), false, false) ?? '', /never replicated/);
  assert.match(
    promotionRefusal(facts({ imageConsistent: false }), true, true) ?? '',
    /refused even with --force/,
  );
  assert.match(
    promotionRefusal(facts({ primary: { ...bound, history: undefined }, history: null }), true, false) ?? '',
    /chain is not recorded yet/,
  );
  assert.match(promotionRefusal(facts({ primaryConnected: true }), true, false) ?? '', /use --force/);
  assert.equal(promotionRefusal(facts({ primaryConnected: true }), true, true), null, '--force takes it');
  assert.equal(promotionRefusal(facts({}), true, false), null);
});

test('an old primary that handed over and follows nobody yet may be promoted on its own chain', () => {
  // A switchover whose frame never arrived leaves both sites secondaries: either may lead again.
  assert.equal(promotionRefusal(facts({ primary: null, history: chain }), true, false), null);
  assert.match(
    promotionRefusal(facts({ primary: null, history: null }), true, false) ?? '',
    /never replicated/,
  );
});

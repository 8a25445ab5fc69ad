// Proves how generation chains compare (compareHistories, docs/failover.md "Generations decide"):
// stories for each relation, including chains cut to the newest generations as a hello carries them,
// and properties over arbitrary chains: a chain extended by some generations is `ahead` of it and it
// `behind` symmetrically, naming the first new generation and where it started; two different
// extensions of one chain are `diverged` at its last generation; a chain is `same` as itself;
// cutting the older part of either chain (leaving an overlap) changes nothing; chains with no
// common generation are `unrelated`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { compareHistories, type Generation, type HistoryRelation } from '../../src/core/identity.ts';

const siteA = 'a'.repeat(32);
const siteB = 'b'.repeat(32);
const siteC = 'c'.repeat(32);

/** A generation with a readable id: `n` as 32 hex digits. */
function generation(n: number, startedAt: number, primarySite = siteA): Generation {
  return { id: n.toString(16).padStart(32, '0'), startedAt, primarySite };
}

const g1 = generation(1, 1, siteA);
const g2 = generation(2, 40, siteB);
const g3 = generation(3, 90, siteA);
const g3other = generation(33, 75, siteC);

test('same: one current generation, however long the common history', () => {
  assert.deepEqual(compareHistories([g1], [g1]), { relation: 'same', current: g1 });
  assert.deepEqual(compareHistories([g1, g2, g3], [g1, g2, g3]), { relation: 'same', current: g3 });
});

test('ahead and behind: a promotion extends the chain; the old side was superseded at its startedAt', () => {
  assert.deepEqual(compareHistories([g1, g2], [g1]), {
    relation: 'ahead',
    supersededAt: 40,
    superseding: g2,
  });
  assert.deepEqual(compareHistories([g1], [g1, g2]), {
    relation: 'behind',
    supersededAt: 40,
    superseding: g2,
  });
  // Two promotions later, the generation right after the other's current one is named.
  assert.deepEqual(compareHistories([g1, g2, g3], [g1]), {
    relation: 'ahead',
    supersededAt: 40,
    superseding: g2,
  });
});

test('diverged: two promotions from one chain name the last common generation and each side first own', () => {
  assert.deepEqual(compareHistories([g1, g2, g3], [g1, g2, g3other]), {
    relation: 'diverged',
    lastCommon: g2,
    myFirst: g3,
    theirFirst: g3other,
  });
  assert.deepEqual(compareHistories([g1, g2], [g1, g3other]), {
    relation: 'diverged',
    lastCommon: g1,
    myFirst: g2,
    theirFirst: g3other,
  });
});

test('unrelated: no common generation, or an empty chain', () => {
  assert.deepEqual(compareHistories([g1, g2], [g3other]), { relation: 'unrelated' });
  assert.deepEqual(compareHistories([], [g1]), { relation: 'unrelated' });
  assert.deepEqual(compareHistories([g1], []), { relation: 'unrelated' });
});

test('a generation matches only with all its fields: one id with another start or site is not the same generation', () => {
  const forged = { ...g2, startedAt: 41 };
  assert.deepEqual(compareHistories([g1, g2], [g1, forged]), {
    relation: 'diverged',
    lastCommon: g1,
    myFirst: g2,
    theirFirst: forged,
  });
  assert.deepEqual(compareHistories([g2], [{ ...g2, primarySite: siteC }]), { relation: 'unrelated' });
  // Equal current ids over histories that disagree earlier: not the same history.
  assert.equal(compareHistories([g1, g2, g3], [g1, forged, g3]).relation, 'diverged');
});

test('truncated chains align where the oldest generation of one appears in the other', () => {
  // Theirs lost g1 to the hello's bound: it is still behind mine from g2 on.
  assert.deepEqual(compareHistories([g1, g2, g3], [g2]), {
    relation: 'ahead',
    supersededAt: 90,
    superseding: g3,
  });
  // Mine is the cut one: the same.
  assert.deepEqual(compareHistories([g2, g3], [g1, g2]), {
    relation: 'ahead',
    supersededAt: 90,
    superseding: g3,
  });
  assert.deepEqual(compareHistories([g2, g3], [g1, g2, g3]), { relation: 'same', current: g3 });
  // Cut past everything the other shows: nothing ties them.
  assert.deepEqual(compareHistories([g3], [g1, g2]), { relation: 'unrelated' });
});

// ---- properties ------------------------------------------------------------------------------

/**
 * A chain of `length` generations with ids from `firstId` on (distinct across chains built from
 * disjoint ranges), increasing starts and arbitrary primary sites.
 */
const sites = [siteA, siteB, siteC];
function chainArbitrary(firstId: number, lengthMin: number, lengthMax: number): fc.Arbitrary<Generation[]> {
  return fc
    .array(fc.record({ gap: fc.integer({ min: 1, max: 1000 }), site: fc.nat(2) }), {
      minLength: lengthMin,
      maxLength: lengthMax,
    })
    .map((steps) => {
      let startedAt = 0;
      return steps.map((step, index) => {
        startedAt += step.gap;
        return generation(firstId + index, startedAt, sites[step.site]);
      });
    });
}

/** `base` followed by `extra`, the extra generations' starts moved after base's last one. */
function extend(base: Generation[], extra: Generation[]): Generation[] {
  const offset = base.at(-1)?.startedAt ?? 0;
  return [
    ...base,
    ...extra.map((generation) => ({ ...generation, startedAt: generation.startedAt + offset })),
  ];
}

/** The relation as seen from the other side. */
function mirror(relation: HistoryRelation): HistoryRelation {
  switch (relation.relation) {
    case 'ahead':
      return { ...relation, relation: 'behind' };
    case 'behind':
      return { ...relation, relation: 'ahead' };
    case 'diverged':
      return { ...relation, myFirst: relation.theirFirst, theirFirst: relation.myFirst };
    default:
      return relation;
  }
}

test('property: a chain extended by generations is ahead of it, and it behind, naming the first new one', () => {
  fc.assert(
    fc.property(chainArbitrary(1, 1, 12), chainArbitrary(1000, 1, 4), (base, extra) => {
      const extended = extend(base, extra);
      const first = extended[base.length] as Generation;
      const ahead = compareHistories(extended, base);
      assert.deepEqual(ahead, { relation: 'ahead', supersededAt: first.startedAt, superseding: first });
      assert.deepEqual(compareHistories(base, extended), mirror(ahead));
    }),
    { numRuns: 300 },
  );
});

test('property: two different extensions of one chain diverge at its last generation', () => {
  fc.assert(
    fc.property(
      chainArbitrary(1, 1, 12),
      chainArbitrary(1000, 1, 4),
      chainArbitrary(2000, 1, 4),
      (base, mineExtra, theirsExtra) => {
        const mine = extend(base, mineExtra);
        const theirs = extend(base, theirsExtra);
        const diverged = compareHistories(mine, theirs);
        assert.deepEqual(diverged, {
          relation: 'diverged',
          lastCommon: base.at(-1),
          myFirst: mine[base.length],
          theirFirst: theirs[base.length],
        });
        assert.deepEqual(compareHistories(theirs, mine), mirror(diverged));
      },
    ),
    { numRuns: 300 },
  );
});

test('property: cutting older generations off either chain, leaving an overlap, changes no relation', () => {
  const pair = fc
    .tuple(
      chainArbitrary(1, 1, 10),
      chainArbitrary(1000, 0, 3),
      chainArbitrary(2000, 0, 3),
      fc.nat(),
      fc.nat(),
    )
    .map(([base, mineExtra, theirsExtra, cutMine, cutTheirs]) => {
      const mine = extend(base, mineExtra);
      const theirs = extend(base, theirsExtra);
      // Both keep at least base's last generation, so the cut chains still overlap.
      const keepFrom = (chain: Generation[], cut: number) => chain.slice(cut % base.length);
      return { mine, theirs, mineCut: keepFrom(mine, cutMine), theirsCut: keepFrom(theirs, cutTheirs) };
    });
  fc.assert(
    fc.property(pair, ({ mine, theirs, mineCut, theirsCut }) => {
      const whole = compareHistories(mine, theirs);
      assert.notEqual(whole.relation, 'unrelated');
      assert.deepEqual(compareHistories(mineCut, theirs), whole);
      assert.deepEqual(compareHistories(mine, theirsCut), whole);
      assert.deepEqual(compareHistories(mineCut, theirsCut), whole);
      assert.deepEqual(compareHistories(theirsCut, mineCut), mirror(whole));
    }),
    { numRuns: 500 },
  );
});

test('property: a chain is the same as itself; chains of distinct generations are unrelated', () => {
  fc.assert(
    fc.property(chainArbitrary(1, 1, 12), chainArbitrary(1000, 1, 12), (chain, other) => {
      assert.deepEqual(compareHistories(chain, chain), { relation: 'same', current: chain.at(-1) });
      assert.deepEqual(compareHistories(chain, other), { relation: 'unrelated' });
    }),
    { numRuns: 300 },
  );
});

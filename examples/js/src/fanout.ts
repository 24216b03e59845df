// Fan-out: trigger one child run per item and wait for all of them. The parent checkpoints while
// the children run (no memory, no slot), and the results come back in the items' order.
import { metadata, task } from "@kiln-run/sdk";

export const square = task({
  id: "square",
  description: "Squares a number and counts itself in its parent's metadata",
  run: async ({ n }: { n: number }) => {
    metadata.parent.increment("squared");
    return n * n;
  },
});

export const fanOut = task({
  id: "fan-out",
  description: "Squares each number in a child run and sums the squares",
  run: async ({ numbers }: { numbers: number[] }) => {
    metadata.set("status", "fanning out");
    const { runs } = await square.batchTriggerAndWait(numbers.map((n) => ({ payload: { n } })));
    const squares = runs.map((r) => (r.ok ? r.output : null));
    const sum = squares.reduce<number>((a, b) => a + (b ?? 0), 0);
    metadata.set("status", "done");
    return { sum, squares, children: runs.map((r) => r.id), metadata: metadata.current() };
  },
});

/**
 * `namespace.get(namespace.idFromName(name))`, with the id remembered in the isolate: deriving an
 * id hashes the name (about 2% of the gateway's JavaScript time per small request in a CPU
 * profile, where each request derived three). An id is a value, not I/O, so one derived in an
 * earlier request serves later ones; the stub is made per call, in the calling request.
 */
export function stubByName<T extends Rpc.DurableObjectBranded | undefined>(ns: DurableObjectNamespace<T>, name: string): DurableObjectStub<T> {
  let ids = known.get(ns);
  if (!ids) known.set(ns, (ids = new Map()));
  let id = ids.get(name);
  if (!id) {
    // Bounded: a busy isolate sees many accounts and miners; start over rather than grow.
    if (ids.size >= MAX_IDS) ids.clear();
    id = ns.idFromName(name);
    ids.set(name, id);
  }
  return ns.get(id);
}

const MAX_IDS = 10_000;
const known = new WeakMap<object, Map<string, DurableObjectId>>();

// Elastic re-formation: after a group fails (a rank died, hung or became unreachable), the
// processes still alive agree on a smaller group by themselves, through the rendezvous
// (dist/rendezvous.h), with no supervisor: what ranks on several machines do under
// `dlsys train --rank R --world-size N --rendezvous URL --min-workers M`.
//
// Protocol. Each process has a stable id: its rank in the first group. The first group
// (generation 0) is ids 0..N-1. When generation g fails, every survivor:
//   1. writes "join/<g+1>/<id>", its value the ids it has itself not heard a heartbeat from
//      for half the limit (ProcessGroup::unheard_ranks: not verdicts passed on);
//   2. a process that may decide (one whose store outlives its peers: any, on file://; on
//      tcp:// only the one serving it, rank 0 of the first group, which so is never left out
//      and gone with the store) waits until every member of generation g has joined, or
//      `window` has passed since it joined itself (a rank that died never joins, so a loss costs
//      the window), then claims "members/<g+1>" (Rendezvous::set_once) with the ids that had
//      joined and the world it chose from them (its --min-workers and micro-batches); the first
//      claim wins. An id that joined but that more than half of those who joined found silent
//      is left out: a rank cut off from the others that still reaches a shared store (a
//      network partition) is not taken back into a group it cannot connect to (the tcp://
//      decider never leaves itself out: the store would go with it). The others wait
//      for the claim (the window and the rendezvous' timeout);
//   3. every survivor follows the claim, whatever its own flags: the group is the first W ids
//      (W the largest world at most their number that divides the micro-batches, and a power
//      of two when asked; 0 when that is
//      fewer than --min-workers, and then every survivor stops). An id past W is not needed; an
//      id that joined after the claim is not in it. Either way that process leaves the run.
// A survivor is in the next group when it joins before the first decider's window ends (the
// window must cover how long a survivor takes to notice the failure: the heartbeat's limit, a
// step that was computing). On file://, a shared filesystem's caches may hide a join for a
// moment (NFS caches a missing name for a few seconds): a window of several seconds covers it.
//
// Threading: one call at a time per process; every wait is bounded by the window and the
// rendezvous' timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "dist/rendezvous.h"

namespace dlsys::dist {

// Which processes form a generation of the group, and where this one stands in it.
struct Membership {
  int generation = 0;
  std::vector<int> members;  // ids, in rank order
  int rank = -1;             // this process's rank; -1 when it is not in the group
  // Why this process is not in the group (rank -1): "not needed", "late", or "silent" (most of
  // the survivors found it silent: cut off from them).
  std::string left_out;
  int world() const { return static_cast<int>(members.size()); }
};

// Generation 0: ids 0..world-1, this process `id`.
Membership first_membership(int id, int world);

struct ReformOptions {
  int id = 0;                 // this process's stable id (its first rank)
  int min_workers = 1;        // fewer survivors than this end the run
  int64_t divides = 0;        // the new world must divide it (train.micro_batches); 0: any world
  bool power_of_two = false;  // the new world must be a power of two (the trainer's rule)
  // The ids this process has itself not heard from (ProcessGroup::unheard_ranks), told the
  // others with its join.
  std::vector<int> suspects;
  std::chrono::milliseconds window{10000};
};

// The membership of the generation after `failed`, agreed with the other survivors. Errors:
// fewer than `min_workers` would remain (naming the ids that came), every member came back (the
// failure was not a lost rank: nothing to re-form without), the rendezvous unreachable.
Result<Membership> reform(Rendezvous& rendezvous, const Membership& failed,
                          const ReformOptions& options);

}  // namespace dlsys::dist

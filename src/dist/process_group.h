// A group of processes that train together: ranks 0..world-1, connected pairwise by Gloo's TCP
// transport after a rendezvous (dist/rendezvous.h), with the collectives data-parallel training
// needs.
//
// Determinism: all_reduce_sum adds in one fixed association that depends only on the world
// size, never on timing or on which rank answers first: with W a power of two, element i of
// the answer is the balanced binary tree of the ranks' values in rank order,
// ((x0 + x1) + (x2 + x3)) + ..., computed as a reduce-scatter by recursive halving (partners
// at distance 1, 2, 4, ...) and an all-gather by recursive doubling. So every rank gets the
// same bits, and W ranks each holding the tree-sum of a contiguous 1/W of M leaves (M a power
// of two, W dividing M) get exactly the tree-sum of the M leaves that one process would compute
// (tree_sum below): the property that makes training bit-identical across 1, 2 and 4 workers.
// Other world sizes fold the ranks past the largest power of two P into ranks 0.. first
// (x_r + x_{r+P}), then proceed among P: the same bits on every rank, for that world size.
//
// Deadlines: every collective waits at most `timeout` for each message; a peer that died (its
// sockets closed by the kernel) or went silent fails the call with an error naming the rank
// and the collective. A peer whose process stopped or cannot be reached is caught sooner, by
// the group's heartbeat (dist/heartbeat.h, `GroupOptions::heartbeat`): its error names the
// rank that went silent, whichever rank the collective was waiting on (a collective that sees
// a peer's connection close waits briefly for the heartbeat's verdict, so that the rank which
// gave up on a silent one and exited is not blamed instead). After such an error the
// group is unusable: destroy it (a new group, with the next `generation`, may be formed by the
// survivors).
//
// Signals: connect sets SIGPIPE to be ignored when it has the default action (Gloo's writes to
// a peer that is gone would otherwise kill the process rather than fail the collective).
//
// Threading: one thread calls the collectives of a group at a time; the calls must be made in
// the same order on every rank (each takes the next message slot). Two groups may run on two
// threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::dist {

class Rendezvous;

struct GroupOptions {
  int rank = 0;
  int world = 1;
  // tcp://HOST:PORT (rank 0 serves it) or file:///A/FOLDER; see rendezvous.h.
  std::string rendezvous;
  // The rendezvous already open, when this process keeps one across the group's generations
  // (an elastic run, dist/elastic.h); null: `rendezvous` is opened here, and rank 0 serves a
  // tcp:// one for the group's life.
  std::shared_ptr<Rendezvous> store;
  // Which formation of the group this is (0 first, then one more per re-formation): keys of
  // the rendezvous are scoped by it.
  int generation = 0;
  // The longest any wait may take: joining, and each message of a collective.
  std::chrono::milliseconds timeout{30000};
  // How long a rank's heartbeat may be silent before the others give it up (dist/heartbeat.h):
  // a stopped or unreachable rank fails the collectives waiting on it after this rather than
  // after `timeout`. Zero turns the heartbeat off.
  std::chrono::milliseconds heartbeat{5000};
  // The address peers reach this rank at. Empty: an interface's address if `iface` is given;
  // else, for tcp://, the local address of the route to the rendezvous host (127.0.0.1 when that
  // host is loopback); for file://, 127.0.0.1 (one machine; give it for a shared folder).
  std::string host;
  std::string iface;
};

class ProcessGroup {
 public:
  // Joins the group: rendezvous, then a Gloo connection to every other rank. Fails after
  // `timeout` naming the rank that did not come; bad options are Invalid before anything.
  static Result<std::unique_ptr<ProcessGroup>> connect(const GroupOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  // A second group of the same ranks on pairs of its own, for collectives that run on another
  // thread while this group's run (synchronized batch norm in the backward pass while the
  // gradient buckets are all-reduced). Every rank calls it, in the same order, with the same
  // name. It shares this group's heartbeat (a silent rank ends both) and must not outlive it.
  Result<std::unique_ptr<ProcessGroup>> split(const std::string& name);

  // Why the group was given up (a rank the heartbeat reported silent), or OK while it stands.
  Status lost() const;
  // The first failure of a collective on this group or a group split from it (a peer gone,
  // silent or not answering; the heartbeat's verdict when there is one), or OK: once it is
  // set the group is unusable. An elastic run re-forms when it is set.
  Status failure() const;
  // The ranks this one has itself not heard a heartbeat from for half the limit (not another
  // rank's verdict passed on; empty without a heartbeat): what an elastic re-formation tells
  // the others it suspects. Call it before destroying the group.
  std::vector<int> unheard_ranks() const;

  int rank() const { return rank_; }
  int world() const { return world_; }
  const std::string& address() const { return host_; }

  // data[0..n) becomes the sum over the ranks, in the fixed association above, on every rank.
  Status all_reduce_sum(float* data, size_t n);
  // data[0..bytes) of `root` is copied to every rank.
  Status broadcast(void* data, size_t bytes, int root);
  // out[r * bytes .. (r + 1) * bytes) becomes rank r's `mine`, on every rank (a ring).
  Status all_gather(const void* mine, size_t bytes, void* out);
  // Returns when every rank has called it (or fails naming a rank that did not).
  Status barrier();

 private:
  struct Impl;
  ProcessGroup(int rank, int world, std::string host, std::unique_ptr<Impl> impl);

  int rank_;
  int world_;
  std::string host_;
  std::unique_ptr<Impl> impl_;
};

// The balanced binary tree sum of leaves[0..m) element-wise (m a power of two; a single leaf is
// itself), written to out[0..n): what all_reduce_sum gives when the ranks hold its subtrees.
// Leaves are arrays of n floats. Used by a process that computes several leaves itself.
void tree_sum(const std::vector<const float*>& leaves, size_t n, float* out);
// The same sum computed in the leaves' own memory (their values are overwritten): the result is
// in leaves[0]. No allocation: what a trainer uses on its scratch buffers every step.
void tree_sum_in_place(const std::vector<float*>& leaves, size_t n);

}  // namespace dlsys::dist

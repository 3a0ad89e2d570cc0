// Rendezvous: how the ranks of a group find each other before Gloo connects them.
//
// A rendezvous is a small key-value store every rank can reach: each rank writes its Gloo
// address under its own key and reads the others' (gloo::rendezvous::Context::connectFullMesh
// does the reading and writing). Two kinds, named by URL:
//   - tcp://HOST:PORT  the process that serves it (rank 0 of the first group) runs the store on
//                      HOST:PORT (TcpStoreServer, threads of that process); every rank, that one
//                      included, is a client. Clients retry the connection until the deadline
//                      (the server may start last). The store lives as long as its server's
//                      process: a group that must outlive rank 0 needs file://.
//   - file://DIR       a shared folder: a file per key (its name the key, escaped), written to a
//                      temporary name and renamed in, so a reader sees a whole value or none.
//                      For one machine or a filesystem every machine mounts. Use a fresh
//                      folder per run: a key left by an earlier run would be read as this one's.
// Every group's keys are prefixed with the group's `generation` ("g3/…") so a group re-formed
// after a failure never reads the addresses of the one before it.
//
// A `Rendezvous` is one process's connection to the store, kept across the generations of an
// elastic run (dist/elastic.h): set_once (the first writer wins, atomically: the server's lock,
// or link(2) on the folder) is what lets the survivors agree on who is in the next group.
//
// Deadlines: a read waits at most the timeout given, then fails naming the key it waited for
// (and so the rank that did not come). Nothing here blocks without a deadline.
//
// Threading: a Rendezvous and the stores it gives may be used from several threads; their
// requests go one at a time. The server runs its own threads and stops in its destructor.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "core/status.h"

namespace gloo::rendezvous {
class Store;
}

namespace dlsys::dist {

// A parsed rendezvous URL.
struct RendezvousUrl {
  enum class Kind { kTcp, kFile };
  Kind kind = Kind::kTcp;
  std::string host;  // tcp
  int port = 0;      // tcp
  std::string dir;   // file
};

// Parses tcp://HOST:PORT (PORT 1..65535; HOST a name, an IPv4 address or [IPv6]) or
// file://DIR (an absolute path). Errors name the URL and what is wrong with it.
Result<RendezvousUrl> parse_rendezvous_url(const std::string& url);

class RendezvousBackend;

class Rendezvous : public std::enable_shared_from_this<Rendezvous> {
 public:
  // Opens the store at `url`. `serve`: this process serves tcp://HOST:PORT (failing if the port
  // is taken); it stops when the last holder of this object (or of a store it gave) lets go.
  // `timeout` bounds every wait: the connection to the server and each read of a key.
  static Result<std::shared_ptr<Rendezvous>> open(const std::string& url, bool serve,
                                                  std::chrono::milliseconds timeout);
  // Serves a tcp:// store on a port the kernel picks on `host` (no race with another process
  // for a port found free earlier); url() names it. What `dlsys train --nproc` does for its
  // ranks, which then all connect as clients.
  static Result<std::shared_ptr<Rendezvous>> serve_on_free_port(const std::string& host,
                                                                std::chrono::milliseconds timeout);
  ~Rendezvous();

  // Generation `generation`'s keys ("g<generation>/KEY") as Gloo's store, for connectFullMesh
  // and the heartbeat: its failures are Gloo's IoException, naming the rank a missing key
  // belongs to. It keeps this rendezvous open.
  std::shared_ptr<gloo::rendezvous::Store> generation(int generation);

  // Writes `value` under `key` (whole keys: no generation prefix is added here).
  Status set(const std::string& key, const std::string& value);
  // Writes `value` under `key` unless the key is set already, atomically across processes;
  // returns what the key holds afterwards: `value` for the first writer, the first writer's
  // value for everyone after it.
  Result<std::string> set_once(const std::string& key, const std::string& value);
  // The value of `key`, waiting at most `wait` (and the timeout) for it to appear; nullopt when
  // it did not. An unreachable store is an error.
  Result<std::optional<std::string>> get(const std::string& key, std::chrono::milliseconds wait);

  const std::string& url() const { return url_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  // Whether the store outlives this process's peers: file://, or the tcp:// one this process
  // serves. A decision every rank must read (dist/elastic.h's claim) is written only by such a
  // process, so that the store is there while the others read it.
  bool outlives_peers() const { return outlives_peers_; }

 private:
  Rendezvous(std::string url, std::chrono::milliseconds timeout,
             std::shared_ptr<RendezvousBackend> backend, bool outlives_peers);
  std::string url_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<RendezvousBackend> backend_;
  bool outlives_peers_;
};

// Rendezvous::open(url, rank == 0, timeout)->generation(generation): the store of one group.
Result<std::shared_ptr<gloo::rendezvous::Store>> open_rendezvous(const std::string& url, int rank,
                                                                 int generation,
                                                                 std::chrono::milliseconds timeout);

}  // namespace dlsys::dist

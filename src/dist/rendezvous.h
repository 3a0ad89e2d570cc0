// Rendezvous: how the ranks of a group find each other before Gloo connects them.
//
// A rendezvous is a small key-value store every rank can reach: each rank writes its Gloo
// address under its own key and reads the others' (gloo::rendezvous::Context::connectFullMesh
// does the reading and writing). Two kinds, named by URL:
//   - tcp://HOST:PORT  rank 0 serves the store on HOST:PORT (TcpStoreServer, a thread of rank
//                      0's process); every rank, rank 0 included, is a client. Clients retry
//                      the connection until the deadline (rank 0 may start last).
//   - file://DIR       a shared folder (Gloo's FileStore): a file per key, written to a
//                      temporary name and renamed in. For one machine or a shared filesystem.
// Every key is prefixed with the group's `generation` ("g3/…") so a group re-formed after a
// failure never reads the addresses of the one before it.
//
// Deadlines: a read waits at most the timeout given, then fails naming the key it waited for
// (and so the rank that did not come). Nothing here blocks without a deadline.
//
// Threading: a store client is used by one thread at a time (Gloo's connect is sequential).
// The server runs its own threads and stops in its destructor.
#pragma once

#include <chrono>
#include <memory>
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

// The store for `url`, its keys under "g<generation>/". For tcp://, rank 0 also starts the
// server on HOST:PORT (failing if the port is taken). `timeout` bounds every wait of the
// store: the connection to the server and each read of a key.
Result<std::shared_ptr<gloo::rendezvous::Store>> open_rendezvous(const std::string& url, int rank,
                                                                 int generation,
                                                                 std::chrono::milliseconds timeout);

}  // namespace dlsys::dist

// The ingress's pure parts: the Authorization header, the token bucket, the sessions' memory of
// assignments sent.

#include <doctest/doctest.h>

#include "ingress/provider_ingress/http_front.h"
#include "ingress/provider_ingress/sent_assignments.h"
#include "ingress/provider_ingress/token_bucket.h"

using namespace unidesk::ingress;

TEST_CASE("bearer tokens") {
  std::string good = "udn_" + std::string(43, 'a');
  CHECK(ParseBearer("Bearer " + good, true).token == good);
  CHECK(ParseBearer("", false).error == "token_missing");
  CHECK(ParseBearer("", true).error == "token_missing");
  CHECK(ParseBearer("Basic abc", true).error == "token_malformed");
  CHECK(ParseBearer("Bearer " + good + "=", true).error == "token_malformed");
  CHECK(ParseBearer("Bearer udn_" + std::string(42, 'a') + "!", true).error == "token_malformed");
}

TEST_CASE("token bucket: burst, then the rate") {
  TokenBucket b(10, 5);
  auto t = TokenBucket::Clock::now();
  int taken = 0;
  for (int i = 0; i < 20; ++i) taken += b.Take(t);
  CHECK(taken == 5);
  CHECK(!b.Take(t + std::chrono::milliseconds(50)));
  CHECK(b.Take(t + std::chrono::milliseconds(150)));
}

TEST_CASE("an assignment is claimed once per session, and the memory is bounded") {
  SentAssignments sent(3);
  CHECK(sent.Claim("t1", 1));
  CHECK_FALSE(sent.Claim("t1", 1));  // the bus's copy of what the scheduler handed over
  CHECK(sent.Claim("t1", 2));        // a new attempt is a new assignment
  CHECK(sent.Claim("t2", 1));
  CHECK_FALSE(sent.Claim("t2", 1));
  CHECK(sent.Claim("t3", 1));  // evicts ("t1", 1), the oldest
  CHECK(sent.Claim("t1", 1));
  CHECK_FALSE(sent.Claim("t3", 1));
}

// transfer_example — opens two accounts, funds one and moves money between them
// through a wallet cluster's routers, the way an application uses the client.
//
//   transfer_example 127.0.0.1:7100[,127.0.0.1:7101] [from_account to_account]
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "client/wallet_client.h"

int main(int argc, char** argv) {
  if (argc != 2 && argc != 4) {
    std::fprintf(stderr, "usage: %s host:port[,host:port...] [from_account to_account]\n", argv[0]);
    return 2;
  }
  wallet::client::ClientOptions options;
  std::stringstream routers(argv[1]);
  for (std::string endpoint; std::getline(routers, endpoint, ',');) options.endpoints.push_back(endpoint);
  const uint64_t from = argc == 4 ? std::strtoull(argv[2], nullptr, 10) : 1001;
  const uint64_t to = argc == 4 ? std::strtoull(argv[3], nullptr, 10) : 1002;

  auto client = wallet::client::Client::Create(options);
  if (!client.ok()) {
    std::fprintf(stderr, "cannot create the client: %s\n", std::string(client.status().message()).c_str());
    return 1;
  }
  wallet::client::Client& wallet = **client;
  for (uint64_t account : {from, to}) {
    if (wallet::client::Reply r = wallet.Open(account, "USD"); !r.ok()) {
      std::fprintf(stderr, "OPEN %llu: %s\n", static_cast<unsigned long long>(account), r.ToString().c_str());
      return 1;
    }
  }
  wallet::client::Reply deposit = wallet.Deposit(from, 10'000);  // 100.00 USD; the txid is made for us
  std::printf("deposit 10000 into %llu: %s (txid %s)\n", static_cast<unsigned long long>(from),
              deposit.ToString().c_str(), deposit.txid.c_str());

  wallet::client::TransferRequest transfer;
  transfer.from = from;
  transfer.to = to;
  transfer.amount = 2'500;
  transfer.currency = "USD";
  wallet::client::Reply moved = wallet.Transfer(transfer);
  std::printf("transfer 2500 %llu -> %llu: %s (txid %s, %d send(s))\n", static_cast<unsigned long long>(from),
              static_cast<unsigned long long>(to), moved.ToString().c_str(), moved.txid.c_str(), moved.attempts);
  // The same request again (same txid): a retry never moves the money twice.
  transfer.txid = moved.txid;
  std::printf("the same transfer again: %s\n", wallet.Transfer(transfer).ToString().c_str());

  // A batch: one router command, one reply per transfer.
  std::vector<wallet::client::TransferRequest> batch(3, wallet::client::TransferRequest{from, to, 100, "USD", "", {}});
  std::vector<wallet::client::Reply> replies = wallet.TransferBatch(batch);
  for (size_t i = 0; i < replies.size(); ++i) std::printf("batch item %zu: %s\n", i, replies[i].ToString().c_str());

  wallet::client::Balance balance;
  for (uint64_t account : {from, to}) {
    wallet::client::Reply r = wallet.GetBalance(account, &balance);
    std::printf("balance of %llu: %s available=%lld held=%lld %s\n", static_cast<unsigned long long>(account),
                r.ToString().c_str(), static_cast<long long>(balance.available), static_cast<long long>(balance.held),
                balance.currency.c_str());
  }
  // An amount the account does not have: rejected, and the client does not retry it.
  transfer.txid.clear();
  transfer.amount = 1'000'000;
  wallet::client::Reply refused = wallet.Transfer(transfer);
  std::printf("transfer 1000000: %s (rejected=%d)\n", refused.ToString().c_str(), refused.rejected() ? 1 : 0);
  return moved.ok() ? 0 : 1;
}

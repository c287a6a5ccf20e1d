// tcc_flow.h — the TC/C executor: one cross-shard transfer, try-confirm/cancel.
//
// Messages (H = home shard, the owner of `from`, which keeps the phase row;
// O = the owner of `to`), as docs/transactions.md draws them:
//   1. H  TCC.TRY txid DEBIT from amount currency ROW to
//        available -> held and the row created (debit_try ok, credit_try sent), one
//        atomic step. A refusal (INSUFFICIENT_FUNDS, ...) leaves nothing: the client
//        is told that rule. +REPLAYED: another request owns it -> follow the row.
//   2. O  TCC.TRY txid CREDIT to amount currency          (pending credit)
//   3. H  TCC.CONFIRM txid DEBIT ROW decision confirm phase confirming credit_try ok ...
//      or TCC.CANCEL  txid DEBIT ROW decision cancel  phase cancelling credit_try ...
//        The decision is written in the same shard step as the home branch's second
//        phase, before anything is sent to O; the shard refuses a second phase that
//        contradicts the row's decision (DECISION_FIXED), so a slow executor and a
//        resolver can never apply opposite decisions. The client is answered here.
//   4. O  TCC.CONFIRM|CANCEL txid CREDIT   (a cancel that finds no try fences it)
//   5. H  ROW.SET txid credit_end done phase committed|aborted [out_of_order 1]
// Step 2 is sent up to first_phase_attempts times; without an answer the
// transaction is cancelled (client: ABORTED). Steps 3-5 are resent with backoff
// until they are answered (a lease on the row keeps other routers away meanwhile).
//
// Resume (resolver, operator): from the row. No decision yet: the credit branch is
// asked (TX on O); tried -> confirm, otherwise -> cancel (an operator's confirm is
// refused unless the credit branch was tried). A decision: steps 3-5 as needed.
#pragma once

#include <memory>

#include "xshard/flow.h"

namespace wallet::tcc {

std::shared_ptr<xshard::Flow> MakeTccFlow(std::shared_ptr<xshard::FlowEnv> env, xshard::TransferSpec spec,
                                          xshard::OutcomeCallback done);

}  // namespace wallet::tcc

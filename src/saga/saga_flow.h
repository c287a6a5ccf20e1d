// saga_flow.h — the saga executor: one cross-shard transfer as two local steps.
//
// Messages (H = home shard, the owner of `from`, which keeps the saga's row;
// O = the owner of `to`):
//   1. H  SAGA.STEP txid 1 DEBIT from amount currency ROW to
//        debits at once and creates the row, one atomic step. A refusal leaves
//        nothing: the client is told that rule. +REPLAYED: follow the row.
//   2. O  SAGA.STEP txid 2 CREDIT to amount currency
//        +OK: the money has moved; the client is answered committed, then
//   3. H  ROW.SET txid decision confirm phase committed credit_try ok
//      A business refusal of step 2 (UNKNOWN_ACCOUNT, CURRENCY_MISMATCH, OVERFLOW):
//   3'. H SAGA.COMPENSATE txid 1 ROW decision cancel phase cancelling credit_try failed ...
//        (A is credited back in the same shard step as the decision)
//   4'. O SAGA.COMPENSATE txid 2          (+EMPTY: fences a late duplicate of step 2)
//   5'. H ROW.SET txid credit_end done phase aborted
// A transient failure of step 2 (no answer, shard down, overload) is retried
// forward, never compensated: the client is told kInDoubt after answer_within_ms
// and the flow keeps resending in the background under a lease on the row.
//
// Resume: no decision -> step 2 forward; decision confirm -> step 3; cancel -> 3'-5'.
// An operator's cancel is refused once step 2 is done, a confirm until it is.
#pragma once

#include <memory>

#include "xshard/flow.h"

namespace wallet::saga {

std::shared_ptr<xshard::Flow> MakeSagaFlow(std::shared_ptr<xshard::FlowEnv> env, xshard::TransferSpec spec,
                                           xshard::OutcomeCallback done);

}  // namespace wallet::saga

// pass-through, in JavaScript: keeps every event (the cost of a
// JavaScript filter itself).

import { exportFilter, keep } from "../../../guest-sdk/js/weir-filter.js";

class PassThrough {
  filter(events) {
    return events.map(() => keep());
  }
}

export const { init, filter } = exportFilter(PassThrough);

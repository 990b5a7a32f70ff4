// The meter picker: a type-ahead combobox (downshift's useCombobox: ARIA combobox
// roles, arrow keys, Enter, Escape) over the API's `devices(search:)`. Nothing is
// loaded until it opens; each pause in typing asks the server for the first matches of
// each lifecycle (registered first), so it works the same for ten meters or a million.

import { useCombobox, type UseComboboxState, type UseComboboxStateChangeOptions } from "downshift";
import { useEffect, useRef, useState } from "react";
import { useQuery } from "urql";
import { DEVICE, METER_SEARCH } from "../api/queries";
import type { Device, Lifecycle } from "../api/types";
import { useDebounced } from "../lib/debounce";
import { ErrorList } from "./ErrorList";

/** Matches shown per lifecycle; more are reached by typing more. */
export const MATCHES_PER_GROUP = 20;
const TYPING_PAUSE_MS = 200;

type Match = Pick<Device, "deviceId" | "name" | "location" | "lifecycle" | "online">;
interface Matches {
  pageInfo: { hasNextPage: boolean };
  nodes: Match[];
}
type SearchResult = Partial<Record<"registered" | "discovered" | "decommissioned", Matches>>;

const GROUPS: { key: keyof SearchResult; lifecycle: Lifecycle; label: string }[] = [
  { key: "registered", lifecycle: "REGISTERED", label: "Registered" },
  { key: "discovered", lifecycle: "DISCOVERED", label: "Discovered (not registered yet)" },
  { key: "decommissioned", lifecycle: "DECOMMISSIONED", label: "Decommissioned" },
];

/** What the closed picker shows for a meter. */
export function meterLabel(meter: Pick<Match, "deviceId" | "name"> | null): string {
  if (!meter) return "";
  return meter.name ? `${meter.name} · ${meter.deviceId}` : meter.deviceId;
}

interface Props {
  value: string | undefined;
  onChange(deviceId: string): void;
  includeDecommissioned?: boolean;
}

export function MeterPicker({ value, onChange, includeDecommissioned = true }: Props) {
  // The chosen meter's name (the page asks for the same device: one request).
  const [chosen] = useQuery<{ device: Device | null }>({
    query: DEVICE,
    variables: { deviceId: value ?? "" },
    pause: !value,
  });
  const selected: Match | null = value
    ? chosen.data?.device?.deviceId === value
      ? chosen.data.device
      : { deviceId: value, name: null, location: null, lifecycle: "REGISTERED", online: null }
    : null;
  const label = meterLabel(selected);

  const [open, setOpen] = useState(false);
  const [inputValue, setInputValue] = useState(label);
  // Closed, the field shows the chosen meter (its name arrives after its id).
  useEffect(() => {
    if (!open) setInputValue(label);
  }, [label, open]);

  const typed = open ? inputValue.trim() : "";
  const search = useDebounced(typed, TYPING_PAUSE_MS);
  const [result] = useQuery<SearchResult>({
    query: METER_SEARCH,
    variables: { search: search || null, first: MATCHES_PER_GROUP, withDecommissioned: includeDecommissioned },
    pause: !open,
  });
  // While the next answer is on its way, the last one stays (no flicker per key).
  const last = useRef<SearchResult | undefined>(undefined);
  if (result.data) last.current = result.data;
  const data = result.data ?? last.current;
  const settling = result.fetching || typed !== search;

  const groups = GROUPS.filter((g) => includeDecommissioned || g.lifecycle !== "DECOMMISSIONED").map((g) => ({
    ...g,
    matches: data?.[g.key],
  }));
  const items = groups.flatMap((g) => g.matches?.nodes ?? []);

  const { getLabelProps, getInputProps, getMenuProps, getItemProps, highlightedIndex } = useCombobox<Match>({
    items,
    inputValue,
    isOpen: open,
    selectedItem: selected,
    itemToString: meterLabel,
    itemToKey: (item) => item?.deviceId ?? null,
    onInputValueChange: ({ inputValue: next }) => setInputValue(next ?? ""),
    onIsOpenChange: ({ isOpen }) => setOpen(Boolean(isOpen)),
    onSelectedItemChange: ({ selectedItem }) => {
      if (selectedItem && selectedItem.deviceId !== value) onChange(selectedItem.deviceId);
    },
    stateReducer: (state: UseComboboxState<Match>, { type, changes }: UseComboboxStateChangeOptions<Match>) => {
      const types = useCombobox.stateChangeTypes;
      // Opening turns the field into the search box: the chosen meter's label gives
      // way to what is typed (the first meters of each group until then).
      if (changes.isOpen && !state.isOpen && state.inputValue === meterLabel(state.selectedItem)) {
        return { ...changes, inputValue: type === types.InputChange ? changes.inputValue : "" };
      }
      // Leaving, or Escape, keeps the chosen meter and shows it again.
      if (type === types.InputBlur || type === types.InputKeyDownEscape) {
        const kept = changes.selectedItem ?? state.selectedItem;
        return { ...changes, isOpen: false, selectedItem: kept, inputValue: meterLabel(kept) };
      }
      return changes;
    },
  });

  let index = 0;
  return (
    <div className="picker">
      <label {...getLabelProps()}>Meter</label>
      <input
        {...getInputProps({
          placeholder: "Search by id, name or location",
          spellCheck: false,
          autoComplete: "off",
        })}
        data-testid="meter-picker"
        type="text"
        enterKeyHint="search"
      />
      <ul {...getMenuProps()} className={open ? "picker-menu open" : "picker-menu"} data-testid="meter-picker-menu">
        {open ? (
          <>
            {!data && settling ? <li className="picker-note">Searching…</li> : null}
            {data && items.length === 0 && !settling ? (
              <li className="picker-note" data-testid="meter-picker-none">
                {typed ? `No meter's id, name or location contains “${typed}”.` : "No meters."}
              </li>
            ) : null}
            {groups.map((group) =>
              group.matches && group.matches.nodes.length > 0 ? (
                <li key={group.key} className="picker-group" role="presentation">
                  <span className="picker-group-label" aria-hidden="true">
                    {group.label}
                  </span>
                  <ul role="group" aria-label={group.label}>
                    {group.matches.nodes.map((meter) => {
                      const itemIndex = index++;
                      return (
                        <li
                          key={meter.deviceId}
                          {...getItemProps({ item: meter, index: itemIndex })}
                          className={
                            "picker-option" +
                            (highlightedIndex === itemIndex ? " highlighted" : "") +
                            (meter.deviceId === value ? " chosen" : "")
                          }
                          data-testid={`meter-option-${meter.deviceId}`}
                          data-device-id={meter.deviceId}
                        >
                          <span className="picker-option-name">{meter.name ?? meter.deviceId}</span>
                          <span className="picker-option-detail">
                            {meter.name ? meter.deviceId : null}
                            {meter.location ? `${meter.name ? " · " : ""}${meter.location}` : null}
                          </span>
                        </li>
                      );
                    })}
                  </ul>
                  {group.matches.pageInfo.hasNextPage ? (
                    <span className="picker-more" data-testid={`meter-picker-more-${group.key}`}>
                      {typed
                        ? `More ${group.key} meters match: type more to narrow.`
                        : `More ${group.key} meters: type part of an id, name or location.`}
                    </span>
                  ) : null}
                </li>
              ) : null,
            )}
          </>
        ) : null}
      </ul>
      <ErrorList error={result.error} />
    </div>
  );
}

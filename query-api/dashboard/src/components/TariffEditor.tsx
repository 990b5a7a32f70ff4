// The tariff version editor: effective date, rates, slabs (rows added and removed),
// fixed and minimum charges, taxes and time-of-use bands. Errors the API returns for
// a path of the document (`components[1].slabs[0]`, `effective_from`) are shown next
// to that part; anything else above the form.

import { useState, type ReactNode } from "react";
import {
  BASES,
  BASIS_LABELS,
  COMPONENT_LABELS,
  hhmm,
  newComponent,
  type Component,
  type TariffDocument,
} from "../lib/tariff";

export interface FieldError {
  /** Where in the document (`components[1].slabs[0].rate`); null when the API did not say. */
  path: string | null;
  message: string;
}

interface Props {
  document: TariffDocument;
  errors: FieldError[];
  busy: boolean;
  onSubmit(document: TariffDocument): void;
  onCancel?(): void;
  submitLabel: string;
}

/** Every path the form shows, most specific last. */
function knownPaths(document: TariffDocument): string[] {
  const paths = ["tariff_id", "version", "effective_from", "title", "currency", "time_zone", "rounding", "included_taxes"];
  document.components.forEach((component, i) => {
    const at = `components[${i}]`;
    paths.push(at);
    for (const field of ["name", "group", "rate", "per", "percent", "of", "pricing"]) paths.push(`${at}.${field}`);
    if (component.kind === "slabs") {
      paths.push(`${at}.slabs`);
      component.slabs.forEach((_, j) => {
        paths.push(`${at}.slabs[${j}]`, `${at}.slabs[${j}].up_to_kwh`, `${at}.slabs[${j}].rate`, `${at}.slabs[${j}].name`);
      });
    }
    if (component.kind === "time_of_use") {
      paths.push(`${at}.bands`);
      component.bands.forEach((_, j) => {
        paths.push(`${at}.bands[${j}]`, `${at}.bands[${j}].rate`, `${at}.bands[${j}].from`, `${at}.bands[${j}].to`);
      });
    }
  });
  (document.included_taxes ?? []).forEach((_, i) => paths.push(`included_taxes[${i}]`, `included_taxes[${i}].percent`));
  return paths;
}

/**
 * A list-level error (`components[1].slabs: … 50 follows 1200`) names the limit that
 * is out of order: placed at the row with that limit.
 */
function rowOfListError(document: TariffDocument, path: string, message: string): string | null {
  const list = /^components\[(\d+)\]\.(slabs)$/.exec(path);
  const limit = /(-?[\d.]+) follows/.exec(message);
  if (!list || !limit) return null;
  const component = document.components[Number(list[1])];
  if (component?.kind !== "slabs") return null;
  const row = component.slabs.findIndex((s) => s.up_to_kwh !== null && Number(s.up_to_kwh) === Number(limit[1]));
  return row < 0 ? null : `${path}[${row}]`;
}

/** The errors placed at the longest known path that their path starts with. */
function placeErrors(document: TariffDocument, errors: FieldError[]) {
  const paths = knownPaths(document);
  const placed = new Map<string, string[]>();
  const unplaced: string[] = [];
  for (const error of errors) {
    const row = error.path ? rowOfListError(document, error.path, error.message) : null;
    const at =
      row ??
      (error.path
        ? paths
            .filter((p) => error.path === p || error.path!.startsWith(p + ".") || error.path!.startsWith(p + "["))
            .sort((a, b) => b.length - a.length)[0]
        : undefined);
    if (at) placed.set(at, [...(placed.get(at) ?? []), error.message]);
    else unplaced.push(error.message);
  }
  return { placed, unplaced };
}

export function TariffEditor({ document: initial, errors, busy, onSubmit, onCancel, submitLabel }: Props) {
  const [doc, setDoc] = useState<TariffDocument>(() => structuredClone(initial));
  const { placed, unplaced } = placeErrors(doc, errors);
  const errorAt = (path: string) =>
    (placed.get(path) ?? []).map((message, i) => (
      <span key={i} className="field-error" role="alert" data-testid={`error-${path}`}>
        {message}
      </span>
    ));

  const update = (change: (draft: TariffDocument) => void) =>
    setDoc((current) => {
      const draft = structuredClone(current);
      change(draft);
      return draft;
    });
  const updateComponent = (index: number, change: (component: Component) => void) =>
    update((draft) => change(draft.components[index]));

  return (
    <form
      className="tariff-editor"
      data-testid="tariff-editor"
      onSubmit={(event) => {
        event.preventDefault();
        onSubmit(doc);
      }}
    >
      {unplaced.length > 0 ? (
        <ul className="errors" role="alert" data-testid="tariff-errors">
          {unplaced.map((message, i) => (
            <li key={i}>{message}</li>
          ))}
        </ul>
      ) : null}
      <div className="form">
        <Field label="Tariff" error={errorAt("tariff_id")}>
          <input value={doc.tariff_id} readOnly />
        </Field>
        <Field label="Version" error={errorAt("version")}>
          <input value={doc.version} readOnly />
        </Field>
        <Field label="Effective from" error={errorAt("effective_from")}>
          <input
            type="date"
            name="effective_from"
            required
            value={doc.effective_from}
            onChange={(e) => update((d) => void (d.effective_from = e.target.value))}
          />
        </Field>
        <Field label="Title" error={errorAt("title")}>
          <input value={doc.title ?? ""} onChange={(e) => update((d) => void (d.title = e.target.value || null))} />
        </Field>
        <Field label="Currency" error={errorAt("currency")}>
          <input value={doc.currency} maxLength={3} onChange={(e) => update((d) => void (d.currency = e.target.value.toUpperCase()))} />
        </Field>
        <Field label="Time zone" error={errorAt("time_zone")}>
          <input value={doc.time_zone} onChange={(e) => update((d) => void (d.time_zone = e.target.value))} />
        </Field>
        <Field label="Round each line to" error={errorAt("rounding")}>
          <input
            inputMode="decimal"
            value={doc.rounding?.line?.increment ?? "0.01"}
            onChange={(e) =>
              update((d) => {
                d.rounding = { ...d.rounding, line: { mode: d.rounding?.line?.mode ?? "half_up", increment: e.target.value } };
              })
            }
          />
        </Field>
      </div>

      {doc.components.map((component, index) => (
        <fieldset key={index} className="component" data-testid={`component-${index}`} data-kind={component.kind}>
          <legend>
            {COMPONENT_LABELS[component.kind]}
            <button
              type="button"
              className="link-button"
              onClick={() => update((d) => void d.components.splice(index, 1))}
              aria-label={`Remove ${COMPONENT_LABELS[component.kind]}`}
            >
              remove
            </button>
          </legend>
          {errorAt(`components[${index}]`)}
          <ComponentForm component={component} index={index} errorAt={errorAt} onChange={(change) => updateComponent(index, change)} />
        </fieldset>
      ))}

      <fieldset className="component">
        <legend>Taxes included in the rates</legend>
        {errorAt("included_taxes")}
        {(doc.included_taxes ?? []).map((tax, i) => (
          <div className="row" key={i}>
            <Field label="Name">
              <input value={tax.name} onChange={(e) => update((d) => void (d.included_taxes![i].name = e.target.value))} />
            </Field>
            <Field label="Percent" error={errorAt(`included_taxes[${i}].percent`)}>
              <input inputMode="decimal" value={tax.percent} onChange={(e) => update((d) => void (d.included_taxes![i].percent = e.target.value))} />
            </Field>
            {errorAt(`included_taxes[${i}]`)}
            <button type="button" className="link-button" onClick={() => update((d) => void d.included_taxes!.splice(i, 1))}>
              remove
            </button>
          </div>
        ))}
        <button
          type="button"
          className="button secondary small"
          onClick={() => update((d) => void (d.included_taxes = [...(d.included_taxes ?? []), { name: "VAT", percent: "0" }]))}
        >
          Add included tax
        </button>
      </fieldset>

      <div className="form-actions">
        <span className="muted">Add:</span>
        {(["slabs", "per_kwh", "fixed", "minimum", "percent", "time_of_use"] as const).map((kind) => (
          <button key={kind} type="button" className="button secondary small" onClick={() => update((d) => void d.components.push(newComponent(kind)))}>
            {COMPONENT_LABELS[kind]}
          </button>
        ))}
      </div>
      <div className="form-actions">
        <button type="submit" className="button" disabled={busy} data-testid="publish-version">
          {busy ? "Publishing…" : submitLabel}
        </button>
        {onCancel ? (
          <button type="button" className="button secondary" onClick={onCancel}>
            Cancel
          </button>
        ) : null}
      </div>
    </form>
  );
}

function Field({ label, error, children }: { label: string; error?: ReactNode; children: ReactNode }) {
  return (
    <label className="field">
      <span>{label}</span>
      {children}
      {error}
    </label>
  );
}

function ComponentForm({
  component,
  index,
  errorAt,
  onChange,
}: {
  component: Component;
  index: number;
  errorAt(path: string): ReactNode;
  onChange(change: (component: Component) => void): void;
}) {
  const at = `components[${index}]`;
  const text = (field: string, value: string, set: (c: Component, v: string) => void, decimal = false) => (
    <Field label={field.replace("_", " ")} error={errorAt(`${at}.${field}`)}>
      <input
        name={`${at}.${field}`}
        inputMode={decimal ? "decimal" : undefined}
        value={value}
        onChange={(e) => onChange((c) => set(c, e.target.value))}
      />
    </Field>
  );
  const basis = (value: string, set: (c: Component, v: string) => void) => (
    <Field label="per" error={errorAt(`${at}.per`)}>
      <select value={value} onChange={(e) => onChange((c) => set(c, e.target.value))}>
        {BASES.map((b) => (
          <option key={b} value={b}>
            {BASIS_LABELS[b]}
          </option>
        ))}
      </select>
    </Field>
  );
  switch (component.kind) {
    case "per_kwh":
      return (
        <div className="form">
          {text("name", component.name, (c, v) => void ((c as typeof component).name = v))}
          {text("group", component.group, (c, v) => void ((c as typeof component).group = v))}
          {text("rate", component.rate, (c, v) => void ((c as typeof component).rate = v), true)}
        </div>
      );
    case "fixed":
      return (
        <div className="form">
          {text("name", component.name, (c, v) => void ((c as typeof component).name = v))}
          {text("group", component.group, (c, v) => void ((c as typeof component).group = v))}
          {basis(component.per, (c, v) => void ((c as typeof component).per = v as typeof component.per))}
          {text("rate", component.rate, (c, v) => void ((c as typeof component).rate = v), true)}
        </div>
      );
    case "minimum":
      return (
        <div className="form">
          {text("name", component.name, (c, v) => void ((c as typeof component).name = v))}
          {text("group", component.group, (c, v) => void ((c as typeof component).group = v))}
          {basis(component.per, (c, v) => void ((c as typeof component).per = v as typeof component.per))}
          {component.kw_slabs ? (
            <p className="muted">Charged by kW slabs (kept as published).</p>
          ) : (
            text("rate", component.rate ?? "", (c, v) => void ((c as typeof component).rate = v), true)
          )}
        </div>
      );
    case "percent":
      return (
        <div className="form">
          {text("name", component.name, (c, v) => void ((c as typeof component).name = v))}
          {text("group", component.group, (c, v) => void ((c as typeof component).group = v))}
          {text("percent", component.percent, (c, v) => void ((c as typeof component).percent = v), true)}
          <Field label="of groups (comma separated)" error={errorAt(`${at}.of`)}>
            <input
              value={component.of.join(", ")}
              onChange={(e) =>
                onChange((c) => void ((c as typeof component).of = e.target.value.split(",").map((s) => s.trim()).filter(Boolean)))
              }
            />
          </Field>
        </div>
      );
    case "slabs":
      return (
        <>
          <div className="form">
            {text("group", component.group, (c, v) => void ((c as typeof component).group = v))}
            <Field label="pricing" error={errorAt(`${at}.pricing`)}>
              <select
                value={component.pricing}
                onChange={(e) => onChange((c) => void ((c as typeof component).pricing = e.target.value as typeof component.pricing))}
              >
                <option value="telescopic">telescopic (each slab's rate on the units inside it)</option>
                <option value="non_telescopic">non-telescopic (all units at the slab the total falls in)</option>
              </select>
            </Field>
          </div>
          <div className="rows" data-testid={`slabs-${index}`}>
            {component.slabs.map((slab, j) => (
              <div className="row" key={j} data-testid={`slab-row-${index}-${j}`}>
                <Field label="name" error={errorAt(`${at}.slabs[${j}].name`)}>
                  <input value={slab.name} onChange={(e) => onChange((c) => void ((c as typeof component).slabs[j].name = e.target.value))} />
                </Field>
                <Field label="up to kWh (empty: no limit)" error={errorAt(`${at}.slabs[${j}].up_to_kwh`)}>
                  <input
                    name={`${at}.slabs[${j}].up_to_kwh`}
                    inputMode="decimal"
                    value={slab.up_to_kwh ?? ""}
                    onChange={(e) => onChange((c) => void ((c as typeof component).slabs[j].up_to_kwh = e.target.value.trim() === "" ? null : e.target.value))}
                  />
                </Field>
                <Field label="rate per kWh" error={errorAt(`${at}.slabs[${j}].rate`)}>
                  <input
                    name={`${at}.slabs[${j}].rate`}
                    inputMode="decimal"
                    value={slab.rate}
                    onChange={(e) => onChange((c) => void ((c as typeof component).slabs[j].rate = e.target.value))}
                  />
                </Field>
                <button type="button" className="link-button" onClick={() => onChange((c) => void (c as typeof component).slabs.splice(j, 1))}>
                  remove
                </button>
                {errorAt(`${at}.slabs[${j}]`)}
              </div>
            ))}
            {errorAt(`${at}.slabs`)}
            <button
              type="button"
              className="button secondary small"
              data-testid={`add-slab-${index}`}
              onClick={() =>
                onChange((c) => {
                  const slabs = (c as typeof component).slabs;
                  // The new slab goes before the open last one, if there is one.
                  const open = slabs.length > 0 && slabs[slabs.length - 1].up_to_kwh === null;
                  slabs.splice(open ? slabs.length - 1 : slabs.length, 0, { name: "", up_to_kwh: "", rate: "" });
                })
              }
            >
              Add slab
            </button>
          </div>
        </>
      );
    case "time_of_use":
      return (
        <>
          <div className="form">{text("group", component.group, (c, v) => void ((c as typeof component).group = v))}</div>
          <div className="rows">
            {component.bands.map((band, j) => (
              <div className="row" key={j}>
                <Field label="band">
                  <input value={band.name} onChange={(e) => onChange((c) => void ((c as typeof component).bands[j].name = e.target.value))} />
                </Field>
                <Field label="from" error={errorAt(`${at}.bands[${j}].from`)}>
                  <input type="time" step={3600} value={hhmm(band.from)} onChange={(e) => onChange((c) => void ((c as typeof component).bands[j].from = e.target.value))} />
                </Field>
                <Field label="to" error={errorAt(`${at}.bands[${j}].to`)}>
                  <input type="time" step={3600} value={hhmm(band.to)} onChange={(e) => onChange((c) => void ((c as typeof component).bands[j].to = e.target.value))} />
                </Field>
                <Field label="rate per kWh" error={errorAt(`${at}.bands[${j}].rate`)}>
                  <input inputMode="decimal" value={band.rate} onChange={(e) => onChange((c) => void ((c as typeof component).bands[j].rate = e.target.value))} />
                </Field>
                <button type="button" className="link-button" onClick={() => onChange((c) => void (c as typeof component).bands.splice(j, 1))}>
                  remove
                </button>
                {errorAt(`${at}.bands[${j}]`)}
              </div>
            ))}
            {errorAt(`${at}.bands`)}
            <button
              type="button"
              className="button secondary small"
              onClick={() => onChange((c) => void (c as typeof component).bands.push({ name: "", from: "00:00", to: "00:00", rate: "" }))}
            >
              Add band
            </button>
          </div>
        </>
      );
    case "choose":
      return (
        <details className="choice">
          <summary>
            Chosen by {String(component.by ?? "").replace(/_/g, " ")}: kept as published (the editor shows it, the new
            version carries it unchanged)
          </summary>
          <pre className="json">{JSON.stringify(component, null, 2)}</pre>
        </details>
      );
  }
}

// Audible cues, IEC 60601-1-8 style: high = 10-pulse burst, medium = 3 pulses, low = 1 tone.
// Browsers block audio until a user gesture: the header button arms it once.

let ctx = null;
const button = () => document.getElementById("sound-button");

export function armed() { return ctx !== null && ctx.state === "running"; }

export async function arm() {
  if (!ctx) ctx = new (window.AudioContext || window.webkitAudioContext)();
  if (ctx.state !== "running") await ctx.resume();
  render();
  beep("low");
}

export function render() {
  const b = button();
  if (!b) return;
  const on = armed();
  b.classList.toggle("off", !on);
  b.textContent = on ? "Audio armed" : "Audio not armed: click to arm";
}

export function beep(priority) {
  if (!armed()) return;
  const pulses = priority === "high" ? 10 : priority === "medium" ? 3 : 1;
  const freq = priority === "high" ? 960 : priority === "medium" ? 660 : 440;
  const start = ctx.currentTime + 0.02;
  for (let i = 0; i < pulses; i++) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = freq;
    osc.connect(gain).connect(ctx.destination);
    const t = start + i * 0.25;
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.25, t + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.18);
    osc.start(t);
    osc.stop(t + 0.2);
  }
}
